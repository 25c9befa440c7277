// Swagger UI for the bridge's API (/docs), from the locally served bundle.
// "Try it out" runs as the logged-in dashboard user: requests that change
// something carry the session's CSRF token, as the dashboard's own do.
let csrf = null;
fetch("/api/session", { headers: { accept: "application/json" } })
  .then((r) => (r.ok ? r.json() : null))
  .then((s) => { csrf = s && s.csrf_token; })
  .catch(() => {});

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  requestInterceptor: (req) => {
    if (csrf && !["GET", "HEAD", "OPTIONS"].includes((req.method || "GET").toUpperCase())) {
      req.headers["X-CSRF-Token"] = csrf;
    }
    return req;
  },
});
