// One's own account (/account): who one is, and changing one's password
// (the current one first; a first password made by an admin is meant to
// be changed here). A change ends every session of the user, this one too:
// the login page follows, saying why.

import { api } from "./api.js";
import { h, setAttr, setText } from "./dom.js";
import { session, setSession } from "./session.js";

export function accountView() {
  document.title = "Your account · Kiosk fleet";
  const main = document.getElementById("main");
  const s = session();
  const field = (id, label, autocomplete, minlength) => [
    h("label", { for: id, text: label }),
    h("input", { id, type: "password", required: true, autocomplete, minlength, maxlength: 1024, "data-testid": id })];
  const status = h("p", { id: "password-status", class: "status", role: "status", "aria-live": "polite",
    "data-testid": "password-status" });
  const form = h("form", { id: "password-form", class: "stack-form", "data-testid": "password-form" },
    ...field("password-current", "Current password", "current-password"),
    ...field("password-new", "New password", "new-password", 12),
    ...field("password-again", "New password again", "new-password", 12),
    h("button", { type: "submit", "data-testid": "password-submit", text: "Change password" }));
  main.replaceChildren(
    h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true, text: "← Fleet" })),
    h("h1", { text: "Your account" }),
    h("section", { class: "card narrow", "aria-labelledby": "password-h" },
      h("p", { id: "account-who", text: `${s.name}, ${s.role.replace(/_/g, " ")}${s.sites && s.sites.length
        ? ` at ${s.sites.join(", ")}` : ", every site"}.` }),
      h("h2", { id: "password-h", text: "Change your password" }),
      h("p", { class: "muted small", text: "At least 12 characters; a passphrase of a few words is easiest to remember." }),
      form, status));
  const say = (text, state) => {
    setAttr(status, "data-state", state);
    setAttr(status, "class", state === "changed" ? "status" : "status error");
    setText(status, text);
  };
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const [cur, neu, again] = ["password-current", "password-new", "password-again"].map((id) => document.getElementById(id));
    if (neu.value !== again.value) {
      say("The new passwords differ: type the same one twice.", "error");
      return;
    }
    try {
      await api("POST", "/api/session/password", { current: cur.value, new: neu.value });
      form.reset();
      setSession(null);
      location.assign("/login?changed=1");
    } catch (err) {
      say(`Password not changed: ${err.message}`, "error");
    }
  });
  return { stop() {} };
}
