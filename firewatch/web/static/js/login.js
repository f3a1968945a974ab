/* The login page: OAuth2 password flow, then back to the page that sent us here. */

import { login } from "./api.js";
import { $ } from "./vocab.js";

const next = new URLSearchParams(location.search).get("next");
const target = next && next.startsWith("/") && !next.startsWith("//") ? next : "/";

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
