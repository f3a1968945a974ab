/* The JSON API under the logged-in user's bearer token (OAuth2 password flow, /api/auth/token).
 *
 * The token lives in localStorage so every page and tab of the console shares one login; any 401
 * sends the browser to /login, which comes back to the page afterwards.
 */

const TOKEN_KEY = "firewatch.token";

export class HttpError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

export const token = () => localStorage.getItem(TOKEN_KEY);

export function toLogin() {
  localStorage.removeItem(TOKEN_KEY);
  const next = encodeURIComponent(location.pathname + location.search);
  location.replace(`/login?next=${next}`);
  return new Promise(() => {}); // the page is going away: nothing after this should run
}

export const logout = () => toLogin();

export function authHeaders(extra = {}) {
  return { ...extra, Authorization: `Bearer ${token()}` };
}

async function detailOf(res) {
  try {
    const body = await res.json();
    return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch {
    return res.statusText;
  }
}

/** Call the API; returns parsed JSON, or the Response itself with {raw: true}. */
export async function api(path, { method = "GET", json, raw = false, timeoutMs = 10000 } = {}) {
  if (!token()) return toLogin();
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  try {
    const headers = authHeaders({ Accept: "application/json" });
    if (json !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method, headers, signal: ctrl.signal, cache: "no-store",
      body: json === undefined ? undefined : JSON.stringify(json),
    });
    if (res.status === 401) return toLogin();
    if (!res.ok) throw new HttpError(res.status, await detailOf(res));
    return raw ? res : res.json();
  } finally {
    clearTimeout(timer);
  }
}

/** Log in; the token is kept for every page. Throws HttpError with the API's Chinese reason. */
export async function login(username, password) {
  const res = await fetch("/api/auth/token", {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username, password }),
  });
  if (!res.ok) throw new HttpError(res.status, await detailOf(res));
  localStorage.setItem(TOKEN_KEY, (await res.json()).access_token);
}
