/* The login page: OAuth2 password flow, then back to the page that sent us here. */

import { login } from "./api.js";
import { $ } from "./vocab.js";

/** `next` as a path of this site, else "/": resolved the way the browser would follow it, so
 * "//evil.example", "/\\evil.example", "https://…" and tab or newline tricks lead home. */
function sameSitePath(next) {
  if (!next || !next.startsWith("/")) return "/";
  try {
    const url = new URL(next, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : "/";
  } catch {
    return "/";
  }
}

const target = sameSitePath(new URLSearchParams(location.search).get("next"));

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const error = $("login-error");
  error.hidden = true;
  $("login-submit").disabled = true;
  try {
    await login($("username").value.trim(), $("password").value);
    location.replace(target);
  } catch (err) {
    error.textContent = err.status === 401 ? "用户名或密码错误" : `登录失败：${err.message}`;
    error.hidden = false;
  } finally {
    $("login-submit").disabled = false;
  }
});
