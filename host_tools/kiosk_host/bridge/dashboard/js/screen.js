// The kiosk's screen (/screen/{kiosk}): tells the patient what to do, live.
// Pairs itself once from a technician's link (#pair=...), then asks the
// bridge what to show, waiting for each change (a long poll). It shows a
// state name's words only: the bridge sends no order, name or medicine.

const kiosk = decodeURIComponent(location.pathname.split("/")[2] || "");
const RETRY_MS = 3000;

// state -> [title, what to do, tone, show the call button]
const MESSAGES = {
  ready: ["Scan your pickup code", "Hold the code from your text message or app under the scanner.", "", true],
  opening: ["Your medication is on its way", "The pickup door will open in a moment.", "good", false],
  open_door: ["Open the pickup door", "Take your medication from the bin behind the door.", "good", false],
  close_door: ["Take your medication and close the door", "Push the door until it clicks shut.", "good", false],
  done: ["Thank you", "Your pickup is complete. The door is locked again.", "good", false],
  door_timeout: ["The door was not opened in time", "It is locked again. Scan your code again to retry.", "wait", true],
  problem: ["Something went wrong", "Your medication was not released. A pharmacist has been told; please call the pharmacy.", "bad", true],
  pharmacist_will_call: ["A pharmacist will call you", "Your medication needs a word with the pharmacist first. Please stay by the kiosk.", "wait", false],
  calling: ["A pharmacist will call you", "Your request was sent. Please stay by the kiosk.", "wait", false],
  rescan: ["Your pharmacist has released your order", "Scan your pickup code again.", "good", true],
  unknown_code: ["Code not recognised", "Check that it is the latest code you received and try again.", "bad", true],
  other_kiosk: ["This code is for another kiosk", "Check your message for where to collect your order.", "bad", true],
  used: ["This code has already been used", "If you did not collect your medication, call the pharmacy.", "bad", true],
  replaced: ["This code was replaced", "Use the newest code you received.", "bad", true],
  expired: ["This code has expired", "Please call the pharmacy.", "bad", true],
  cancelled: ["This order is no longer available here", "Please call the pharmacy.", "bad", true],
  not_stocked: ["Your order is not ready yet", "It has not been placed in the kiosk. Please try again later.", "wait", true],
  not_released: ["Your order is waiting for the pharmacist", "A pharmacist has been told. Please stay by the kiosk.", "wait", false],
  busy: ["One moment", "Your code is already being handled.", "wait", false],
  unavailable: ["Please try again later", "The kiosk cannot release medication just now.", "wait", true],
  locked_out: ["Too many attempts", "Please try again later.", "bad", true],
  offline: ["This kiosk is not available", "Please call the pharmacy to collect your medication.", "bad", false],
  unreachable: ["This kiosk is not available", "The screen cannot reach the pharmacy system. Please call the pharmacy.", "bad", false],
  unpaired: ["This screen is not set up", "A technician pairs it with its kiosk from the dashboard.", "bad", false],
};

const $ = (id) => document.getElementById(id);
let shown = null;
let countdown = null;

function render(s) {
  const key = MESSAGES[s.state] ? s.state : "unavailable";
  const [title, detail, tone, call] = MESSAGES[key];
  document.body.dataset.state = s.state;
  document.body.dataset.tone = tone;
  $("call").hidden = !call;
  clearInterval(countdown);
  const cd = $("countdown");
  cd.hidden = true;
  if (s.until && s.now) {
    const end = Date.now() + (s.until - s.now) * 1000;
    const tick = () => {
      const left = Math.max(0, Math.ceil((end - Date.now()) / 60000));
      cd.textContent = left > 1 ? `Try again in ${left} minutes.` : "Try again in a minute.";
      cd.hidden = false;
    };
    tick();
    countdown = setInterval(tick, 15000);
  }
  if (shown !== key) {
    shown = key;
    $("title").textContent = title;
    $("detail").textContent = detail;
  }
}

async function pair() {
  const m = location.hash.match(/^#pair=([A-Za-z0-9_-]+)$/);
  if (!m) return;
  history.replaceState(null, "", location.pathname);   // the link is good once: never keep it
  await fetch(`/api/screen/${encodeURIComponent(kiosk)}/pair`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ pairing: m[1] }),
  });
}

async function follow() {
  let version = "";
  for (;;) {
    let r;
    try {
      r = await fetch(`/api/screen/${encodeURIComponent(kiosk)}${version ? `?after=${version}` : ""}`,
                      { headers: { accept: "application/json" }, cache: "no-store" });
    } catch {
      render({ state: "unreachable" });
      version = "";
      await new Promise((ok) => setTimeout(ok, RETRY_MS));
      continue;
    }
    if (r.status === 401) {
      render({ state: "unpaired" });
      await new Promise((ok) => setTimeout(ok, RETRY_MS * 10));
      continue;
    }
    if (!r.ok) {
      render({ state: "unreachable" });
      version = "";
      await new Promise((ok) => setTimeout(ok, RETRY_MS));
      continue;
    }
    const s = await r.json();
    version = s.version;
    render(s);
  }
}

$("call").addEventListener("click", async () => {
  try {
    const r = await fetch(`/api/screen/${encodeURIComponent(kiosk)}/call`, { method: "POST" });
    if (r.ok) render(await r.json());
  } catch {
    render({ state: "unreachable" });
  }
});

pair().finally(follow);
