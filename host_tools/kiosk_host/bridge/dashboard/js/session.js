// Who is logged in: the bridge's answer to GET /api/session (name, role,
// sites, the permissions the role has, and the session's CSRF token). The
// pages show only what the user may do (`may`); the API checks it anyway.

let current = null;

/** Ask the bridge who is logged in; null when nobody is (401). */
export async function loadSession() {
  let r;
  try {
    r = await fetch("/api/session", { headers: { accept: "application/json" } });
  } catch (e) {
    throw new Error(`the bridge does not answer (${e.message})`);
  }
  if (r.status === 401) {
    current = null;
    return null;
  }
  if (!r.ok) throw new Error(`${r.status} ${r.statusText}`);
  current = await r.json();
  return current;
}

export function session() {
  return current;
}

export function setSession(s) {
  current = s;
}

/** Whether the logged-in user has a permission (see docs/security.md). */
export function may(permission) {
  return Boolean(current && current.may.includes(permission));
}

export function csrfToken() {
  return current ? current.csrf_token : null;
}
