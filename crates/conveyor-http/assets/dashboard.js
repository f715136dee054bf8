"use strict";
const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
let timer = null;

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
}
// Replaces an element's content only when it changed: the pages redraw every second or
// two, and rewriting unchanged HTML would throw away the keyboard focus inside it.
const drawn = new WeakMap();
function setHtml(el, html) {
  if (drawn.get(el) === html) return;
  drawn.set(el, html);
  el.innerHTML = html;
}

function time(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : ""; }

let csrf = null;
// Every change carries the session's CSRF token (read once per page load).
async function post(path, body) {
  if (!csrf) csrf = (await api("/ui/api/session")).csrf;
  return api(path, {method: "POST", headers: {"content-type": "application/json", "x-csrf-token": csrf}, body: JSON.stringify(body || {})});
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({credentials: "same-origin"}, options || {}));
  if (response.status === 401) {
    const reason = await response.json().catch(() => ({}));
    showLogin(/expired/.test(reason.description || "") ? reason.description : "");
    throw new Error("login");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.description || response.statusText);
  return body;
}

function showLogin(message) {
  stop();
  crumbs.textContent = "";
  main.innerHTML = `<form class="login card" id="login" method="post" action="/ui/login">
    <h1>Log in</h1>
    <p class="muted">With the admin token from <code>server.json</code> in the data dir, or an API key.</p>
    ${message ? `<p class="reason">${esc(message)}</p>` : ""}
    <label>Admin token<input name="token" autocomplete="off"></label>
    <p class="muted">or</p>
    <label>API login<input name="login" autocomplete="username"></label>
    <label>API secret<input name="secret" type="password" autocomplete="current-password"></label>
    <button>Log in</button></form>`;
  document.getElementById("login").onsubmit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = {};
    for (const [k, v] of form.entries()) if (v) body[k] = v;
    const response = await fetch("/ui/login", {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)});
    if (response.ok) { csrf = null; route(); } else { showLogin("Wrong credentials."); }
  };
  document.querySelector('#login input[name="token"]').focus();
}

function stop() { if (timer) { clearInterval(timer); timer = null; } }
function every(ms, fn) { stop(); timer = setInterval(fn, ms); }

async function listPage() {
  crumbs.textContent = "/ processes";
  main.innerHTML = `<h1>Processes</h1><div id="process-list"></div>`;
  const draw = async () => {
    const processes = await api("/ui/api/processes");
    const rows = processes.map(p => `<tr class="${p.in_escalation > 0 ? "escalated" : ""}" data-process="${p.id}">
      <td class="num">${p.id}</td><td>${p.alias ? "@" + esc(p.alias) : ""}</td>
      <td><a href="#/p/${p.id}">${esc(p.title)}</a></td><td class="num">${p.tasks}</td>
      <td class="num">${p.in_escalation > 0 ? `<span class="badge warn">${p.in_escalation} in escalation</span>` : `<span class="badge ok">0</span>`}</td></tr>`).join("");
    const list = document.getElementById("process-list");
    if (!list) return;
    setHtml(list, `${processes.length ? `<table><thead><tr><th>id</th><th>alias</th><th>title</th><th>tasks</th><th>escalations</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<p class="muted">No processes yet: pick one on the <a href="#/templates">templates</a> page, or <code>conveyor process clone bitrix_oauth --alias bitrix</code>.</p>`}`);
    live.textContent = "live · " + new Date().toLocaleTimeString();
  };
  await draw();
  every(1000, () => draw().catch(() => {}));
}

async function processPage(id, selected) {
  const p = await api(`/ui/api/processes/${encodeURIComponent(id)}`);
  crumbs.innerHTML = `/ <a href="#/">processes</a> / ${esc(p.title || p.name)}`;
  const escalations = p.nodes.filter(n => n.escalation);
  main.innerHTML = `<h1>${esc(p.title || p.name)} <span class="muted">process ${p.id}${p.alias ? " · @" + esc(p.alias) : ""} · version ${p.version}</span></h1>
    <p><a class="button" id="add-task" href="#/add/${p.id}">Add task</a></p>
    <div class="split"><div class="card diagram" id="diagram">${p.svg}</div>
    <div>${escalations.length ? `<h2 class="warn-title">Escalations</h2><div id="escalations"></div>` : ""}
    <h2 id="tasks-title"${selected ? " data-focus-first" : ""}>Tasks</h2><div id="tasks" class="muted">Click a node on the diagram to see its tasks.</div>
    <h2>Nodes</h2><table id="nodes"><thead><tr><th>node</th><th>kind</th><th>now</th><th>total</th></tr></thead><tbody></tbody></table></div></div>`;
  const nodeRows = (nodes) => nodes.map(n => `<tr class="${n.escalation && n.now > 0 ? "escalated" : ""}">
      <td><a href="#/p/${p.id}/${encodeURIComponent(n.id)}">${esc(n.id)}</a></td><td>${esc(n.kind)}</td>
      <td class="num" data-now-for="${esc(n.id)}">${n.now}</td><td class="num" data-total-for="${esc(n.id)}">${n.total}</td></tr>`).join("");
  main.querySelector("#nodes tbody").innerHTML = nodeRows(p.nodes);
  main.querySelectorAll("#diagram [data-node]").forEach(el => {
    const open = () => { location.hash = `#/p/${p.id}/${encodeURIComponent(el.getAttribute("data-node"))}`; };
    // Reachable with the keyboard too: Tab to a node, Enter or Space opens its tasks.
    el.setAttribute("tabindex", "0");
    el.setAttribute("role", "link");
    el.setAttribute("aria-label", `tasks in ${el.getAttribute("data-node")}`);
    el.addEventListener("click", open);
    el.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); open(); } });
  });
  // Why tasks sit in an escalation, written on the diagram under the node's counter.
  const markWhy = (node, tasks) => {
    const count = main.querySelector(`#diagram [data-count-for="${CSS.escape(node)}"]`);
    if (!count) return;
    const reasons = [...new Set(tasks.map(t => [t.reason.tag, t.reason.description].filter(Boolean).join(": ")).filter(Boolean))];
    let why = count.parentNode.querySelector("text.why");
    if (!why) {
      why = document.createElementNS("http://www.w3.org/2000/svg", "text");
      why.setAttribute("class", "why");
      why.setAttribute("x", count.getAttribute("x"));
      why.setAttribute("y", String(Number(count.getAttribute("y")) + 14));
      why.setAttribute("text-anchor", "middle");
      why.setAttribute("font-size", "10");
      why.setAttribute("fill", "#b91c1c");
      count.parentNode.appendChild(why);
    }
    why.textContent = reasons.length ? "why: " + reasons[0] + (reasons.length > 1 ? ` (+${reasons.length - 1} more)` : "") : "";
    const group = count.closest("[data-node]");
    const title = group && group.querySelector("title");
    if (title) title.textContent = `${node}: ${tasks.length} task(s)` + (reasons.length ? "\n" + reasons.join("\n") : "");
  };
  const showTasks = async (node, into, title) => {
    const tasks = await api(`/ui/api/processes/${p.id}/nodes/${encodeURIComponent(node)}/tasks`);
    if (escalations.some(e => e.id === node)) markWhy(node, tasks);
    if (title) document.getElementById("tasks-title").textContent = `Tasks in ${node}`;
    setHtml(into, tasks.length ? `<table><thead><tr><th>task</th><th>ref</th><th>status</th><th>why</th></tr></thead><tbody>${
      tasks.map(t => `<tr><td><a href="#/t/${p.id}/${t.id}">${t.id}</a></td><td>${esc(t.ref ?? "")}</td><td>${esc(t.status)}</td>
        <td class="reason">${esc([t.reason.tag, t.reason.description].filter(Boolean).join(": "))}</td></tr>`).join("")}</tbody></table>`
      : `<p class="muted">No task in ${esc(node)} now.</p>`);
  };
  const refresh = async () => {
    const counts = await api(`/ui/api/processes/${p.id}/counts`);
    for (const [node, [now, total]] of Object.entries(counts)) {
      main.querySelectorAll(`[data-count-for="${CSS.escape(node)}"]`).forEach(el => { el.textContent = `${now} now · ${total} total`; el.setAttribute("data-now", now); });
      main.querySelectorAll(`[data-now-for="${CSS.escape(node)}"]`).forEach(el => { el.textContent = now; });
      main.querySelectorAll(`[data-total-for="${CSS.escape(node)}"]`).forEach(el => { el.textContent = total; });
      const row = main.querySelector(`[data-now-for="${CSS.escape(node)}"]`);
      if (row) row.parentElement.classList.toggle("escalated", escalations.some(e => e.id === node) && now > 0);
    }
    const box = document.getElementById("escalations");
    if (box) {
      // One box per escalation node, made once: redrawing them would lose the focus.
      for (const e of escalations) {
        let div = box.querySelector(`[data-escalation="${CSS.escape(e.id)}"]`);
        if (!div) { div = document.createElement("div"); div.setAttribute("data-escalation", e.id); box.appendChild(div); }
        await showTasks(e.id, div, false);
      }
    }
    if (selected) await showTasks(selected, document.getElementById("tasks"), true);
    live.textContent = "live · " + new Date().toLocaleTimeString();
  };
  await refresh();
  every(1000, () => refresh().catch(() => {}));
}

// Pages routed to so far: a task page's refresh draws only while its page is shown.
let pages = 0;

async function taskPage(processId, taskId) {
  const page = pages;
  stop();
  const t = await api(`/ui/api/tasks/${encodeURIComponent(processId)}/${encodeURIComponent(taskId)}`);
  const p = await api(`/ui/api/processes/${encodeURIComponent(processId)}`);
  crumbs.innerHTML = `/ <a href="#/">processes</a> / <a href="#/p/${t.process}">process ${t.process}</a> / task ${t.id}`;
  main.innerHTML = `<h1>Task ${t.id}${t.ref ? ` <span class="muted">ref ${esc(t.ref)}</span>` : ""}</h1>
    <p id="task-where">${where(t)}</p>
    ${t.token && p.authorize ? tokenPanel(p, t) : ""}
    <section class="card actions" aria-label="Task actions"><h2>Actions</h2><div id="actions"></div><p id="action-result" role="status"></p></section>
    <div class="grid"><div><h2>Data</h2><pre id="task-data">${esc(JSON.stringify(t.data, null, 2))}</pre></div>
    <div><h2>History</h2><ul class="timeline" id="task-history">${timeline(t.history)}</ul></div></div>`;
  taskActions(t);
  if (t.token && p.authorize) wireToken(p, t);
  // The actions as drawn: drawn again when the task moves or its status changes (a task
  // that fails while watched gets its Retry), unless one is being used right now.
  let shown = t;
  every(2000, async () => {
    const again = await api(`/ui/api/tasks/${encodeURIComponent(processId)}/${encodeURIComponent(taskId)}`).catch(() => null);
    // An answer that comes after the page was left is for a page no longer shown.
    if (!again || page !== pages) return;
    const actions = document.getElementById("actions");
    const dialog = document.getElementById("confirm");
    const typed = document.getElementById("modify-json");
    const node = document.getElementById("goto-node");
    const busy = (actions && actions.contains(document.activeElement)) || (dialog && !dialog.hidden)
      || (actions && actions.querySelector("details[open]"))
      || (typed && typed.value !== "{}") || (node && node.value !== shown.node);
    if ((again.status !== shown.status || again.node !== shown.node) && actions && !busy) {
      taskActions(again);
      shown = again;
    }
    const box = document.getElementById("token-state");
    if (box && again.token) setHtml(box, tokenWords(again));
    const status = document.getElementById("task-status");
    if (status) status.textContent = `${again.node} · ${again.status}`;
    const place = document.getElementById("task-where");
    if (place) setHtml(place, where(again));
    const data = document.getElementById("task-data");
    if (data) data.textContent = JSON.stringify(again.data, null, 2);
    const history = document.getElementById("task-history");
    if (history) setHtml(history, timeline(again.history));
  });
}

// Where a task is, its status, its timer and why it is there.
function where(t) {
  const why = [t.reason.tag, t.reason.description].filter(Boolean).join(": ");
  const timer = t.wake_at ? (t.wake_kind === "remove" ? " (kept until " + time(t.wake_at) + ")" : " until " + time(t.wake_at)) : "";
  return `In <a href="#/p/${t.process}/${encodeURIComponent(t.node)}">${esc(t.node)}</a> · ${esc(t.status)}${esc(timer)}
    ${why ? ` · <span class="reason">${esc(why)}</span>` : ""}`;
}

function timeline(history) {
  return history.map(h => `<li class="${h.event === "error" ? "error" : ""}">
      <span class="muted">${time(h.at)}</span> <b>${esc(h.node)}</b> ${esc(h.event)} ${esc(describe(h))}</li>`).join("");
}

function describe(h) {
  switch (h.event) {
    case "entered": return `from ${h.from} (${h.via})`;
    case "api_request": return `${h.method} ${h.url} → ${h.status ?? "no answer"} in ${h.millis} ms: ${h.outcome}`;
    case "error": return `${h.tag}: ${h.description}`;
    case "modified": return `by ${h.source}: ${(h.keys || []).join(", ")}`;
    case "waiting": return h.until ? `(${h.reason}) until ${time(h.until)}` : `(${h.reason})`;
    case "finished": return h.status;
    case "copied": return `task ${h.task} in process ${h.process}`;
    case "recovered":
      if (h.action === "retry") return `${h.source} retried ${h.to}`;
      if (String(h.action).startsWith("step_")) return `${h.source} stepped it to ${h.to} (${h.action})`;
      return `${h.source} sent it to ${h.to}`;
    default: return "";
  }
}

async function route() {
  pages++;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "p" && parts[1]) await processPage(parts[1], parts[2]);
    else if (parts[0] === "t" && parts[1] && parts[2]) await taskPage(parts[1], parts[2]);
    else if (parts[0] === "templates") await templatesPage();
    else if (parts[0] === "add" && parts[1]) await addTaskPage(parts[1]);
    else await listPage();
    focusHeading();
  } catch (error) {
    if (error.message === "login") return;
    main.innerHTML = `<p class="reason" tabindex="-1">${esc(error.message)}</p>`;
    focusHeading();
  }
}

// A new page starts the keyboard at its heading (the element that had the focus is gone
// with the old page; without this the focus falls back to the top of the document).
function focusHeading() {
  const heading = main.querySelector("[data-focus-first]") || main.querySelector("h1, p.reason");
  if (!heading) return;
  heading.tabIndex = -1;
  heading.focus();
}


// ----- Templates: *Use this process* -----------------------------------------------

async function templatesPage() {
  stop();
  crumbs.innerHTML = `/ <a href="#/">processes</a> / templates`;
  const templates = await api("/ui/api/templates");
  main.innerHTML = `<h1>Templates</h1><p class="muted">Processes shipped with Conveyor. <em>Use this process</em> copies one into this Conveyor.</p>
    ${templates.map(t => `<section class="card template" data-template="${esc(t.name)}">
      <h2>${esc(t.title || t.name)} <span class="muted">${esc(t.name)}</span></h2>
      <p>${esc(t.description || "")}</p>
      <details><summary>Params (${t.params.length})</summary>${paramTable(t.params)}</details>
      <button type="button" class="use" data-use="${esc(t.name)}">Use this process</button>
      <div class="use-form"></div></section>`).join("")}`;
  main.querySelectorAll("button.use").forEach(button => button.addEventListener("click", () => {
    const t = templates.find(x => x.name === button.dataset.use);
    const box = button.parentElement.querySelector(".use-form");
    box.innerHTML = `<form class="form" novalidate>
      <label>Alias <span class="muted">(to refer to it as @alias)</span><input name="alias" value="${esc(t.name.split("_")[0])}" pattern="^[A-Za-z0-9_-]+$"></label>
      <p class="muted">Settings: values every task of the process gets, which no task can change (what <code>process clone --set</code> sets). Leave empty what tasks give themselves.</p>
      ${t.params.map(param => field(param, "set-")).join("")}
      <button>Clone</button> <button type="button" class="cancel">Cancel</button><p class="refusal reason" role="alert"></p></form>`;
    const form = box.querySelector("form");
    checkAsYouType(form);
    const cancel = () => { box.innerHTML = ""; button.focus(); };
    form.querySelector(".cancel").addEventListener("click", cancel);
    form.addEventListener("keydown", (event) => { if (event.key === "Escape") { event.preventDefault(); cancel(); } });
    form.querySelector("input").focus();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const settings = {};
      for (const param of t.params) {
        const value = valueOf(form, param, "set-");
        if (value !== undefined) settings[param.name] = value;
      }
      try {
        const cloned = await post("/ui/api/clone", {template: t.name, alias: form.alias.value, settings});
        location.hash = `#/p/${cloned.id}`;
      } catch (error) { form.querySelector(".refusal").textContent = "error: " + error.message; }
    });
  }));
}

function paramTable(params) {
  if (!params.length) return `<p class="muted">No params.</p>`;
  return `<table><thead><tr><th>param</th><th>what</th><th>default</th></tr></thead><tbody>${params.map(p => `<tr>
    <td><code>${esc(p.name)}</code>${p.required ? ` <b title="required">*</b>` : ""}${p.secret ? ` <span class="badge">secret</span>` : ""}</td>
    <td>${esc(p.description || "")}</td><td>${p.default !== null && p.default !== undefined ? `<code>${esc(JSON.stringify(p.default))}</code>` : ""}</td></tr>`).join("")}</tbody></table>`;
}

// One input for a declared param: its description, a required mark, its pattern
// (checked as one types), a password field for a secret, its default as a placeholder.
function field(param, prefix, required) {
  const id = prefix + param.name;
  const kind = param.secret ? "password" : "text";
  const placeholder = param.default !== null && param.default !== undefined && param.default !== "" ? `default: ${typeof param.default === "string" ? param.default : JSON.stringify(param.default)}` : "";
  return `<label for="${esc(id)}">${esc(param.name)}${required && param.required ? ` <b class="required" aria-label="required">*</b>` : ""}
    ${param.description ? `<span class="muted">${esc(param.description)}</span>` : ""}
    <input id="${esc(id)}" name="${esc(id)}" type="${kind}" autocomplete="off" data-param="${esc(param.name)}"
      ${param.pattern ? `data-pattern="${esc(param.pattern)}"` : ""} ${param.max_length ? `maxlength="${param.max_length}"` : ""}
      ${required && param.required ? `required aria-required="true"` : ""} placeholder="${esc(placeholder)}" data-type="${esc(param.type || "")}">
    <span class="hint" aria-live="polite"></span></label>`;
}

function checkAsYouType(form) {
  form.querySelectorAll("input[data-pattern]").forEach(input => {
    let re = null;
    try { re = new RegExp(input.dataset.pattern, "u"); } catch (_) { return; }
    const check = () => {
      const bad = input.value !== "" && !re.test(input.value);
      input.setAttribute("aria-invalid", bad ? "true" : "false");
      input.parentElement.querySelector(".hint").textContent = bad ? `does not match ${input.dataset.pattern}` : "";
    };
    input.addEventListener("input", check);
  });
}

// The value typed for a param: typed params are read as JSON; empty is absent.
function valueOf(form, param, prefix) {
  const input = form.querySelector(`[name="${CSS.escape(prefix + param.name)}"]`);
  if (!input || input.value === "") return undefined;
  if (param.type && param.type !== "string") {
    try { return JSON.parse(input.value); } catch (_) { return input.value; }
  }
  return input.value;
}

// ----- Add task --------------------------------------------------------------------

async function addTaskPage(processId) {
  stop();
  const p = await api(`/ui/api/processes/${encodeURIComponent(processId)}`);
  crumbs.innerHTML = `/ <a href="#/">processes</a> / <a href="#/p/${p.id}">${esc(p.title || p.name)}</a> / add task`;
  const params = p.params.filter(x => x.input.includes("create"));
  const auth = p.authorize;
  main.innerHTML = `<h1>Add task <span class="muted">to ${esc(p.title || p.name)}</span></h1>
    <form class="form card" id="add" novalidate>
      <label class="check"><input type="checkbox" id="autoref" checked> Autogenerate reference</label>
      <label id="ref-label" hidden>Reference <span class="muted">(unique in the process, e.g. token)</span><input id="ref" name="ref" autocomplete="off"></label>
      <label class="check"><input type="checkbox" id="json-mode"> JSON mode <span class="muted">(free data as one JSON object)</span></label>
      <div id="fields">${params.map(param => param.name === (auth && auth.code_param) ? codeField(param, auth) : field(param, "f-", true)).join("")}</div>
      <label id="json-label" hidden>Data (JSON)<textarea id="json" rows="8" spellcheck="false">{}</textarea></label>
      <button id="send">Send task</button>
      <p class="refusal reason" id="refusal" role="alert"></p></form>`;
  const form = document.getElementById("add");
  checkAsYouType(form);
  const autoref = document.getElementById("autoref");
  autoref.addEventListener("change", () => {
    document.getElementById("ref-label").hidden = autoref.checked;
    if (!autoref.checked) document.getElementById("ref").focus();
  });
  const jsonMode = document.getElementById("json-mode");
  jsonMode.addEventListener("change", () => {
    document.getElementById("fields").hidden = jsonMode.checked;
    document.getElementById("json-label").hidden = !jsonMode.checked;
  });
  if (auth) wireCode(form, auth, p.id, null, name => valueOf(form, {name}, "f-"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const refusal = document.getElementById("refusal");
    refusal.textContent = "";
    let data = {};
    if (jsonMode.checked) {
      try { data = JSON.parse(document.getElementById("json").value || "{}"); }
      catch (error) { refusal.textContent = "error: the data is not JSON: " + error.message; return; }
    } else {
      for (const param of params) {
        let value = valueOf(form, param, "f-");
        if (auth && param.name === auth.code_param && value !== undefined) value = codeFrom(value) ?? value;
        if (value !== undefined) data[param.name] = value;
      }
    }
    const body = {data};
    if (!autoref.checked) body.ref = document.getElementById("ref").value;
    try {
      const added = await post(`/ui/api/processes/${p.id}/tasks`, body);
      location.hash = `#/t/${p.id}/${added.id}`;
    } catch (error) { refusal.textContent = "error: " + error.message; }
  });
}

// ----- The token, plainly ----------------------------------------------------------

function codeField(param, auth) {
  const page = (auth.url || "").split("?")[0];
  return `<fieldset class="code"><legend>${esc(param.name)}${param.required ? ` <b class="required" aria-label="required">*</b>` : ""}</legend>
    <p class="muted">${esc(param.description || "")}</p>
    <label>Authorize page <span class="muted">(the process's, unless you use another)</span><input id="authorize-base" autocomplete="off" placeholder="${esc(page)}"></label>
    <button type="button" id="get-code">Get the code</button>
    <label>The code, or the whole address the browser was sent to<input id="f-${esc(param.name)}" name="f-${esc(param.name)}" type="password" autocomplete="off" data-param="${esc(param.name)}"></label>
    <p class="countdown" id="countdown" aria-live="polite"></p></fieldset>`;
}

// *Get the code* asks the command layer for the authorize page the process declares
// (the same address `conveyor bitrix authorize` prints), filled from what the form
// holds (`valueOf`), else the task `reference`, the process's settings and defaults;
// opens it and counts the code's lifetime down, when the process says how long a code lives.
function wireCode(root, auth, processId, reference, valueOf) {
  const button = root.querySelector("#get-code");
  const base = root.querySelector("#authorize-base");
  const countdown = root.querySelector("#countdown");
  let ticking = null;
  root.addEventListener("code-sent", () => { clearInterval(ticking); countdown.classList.remove("reason"); });
  button.addEventListener("click", async () => {
    const values = {};
    for (const name of auth.uses) {
      const value = valueOf(name);
      if (value !== undefined && value !== null && value !== "") values[name] = value;
    }
    let url;
    try {
      ({url} = await post(`/ui/api/processes/${encodeURIComponent(processId)}/authorize-link`,
        {ref: reference, values, page: base.value.trim() || null}));
    } catch (error) { countdown.textContent = "error: " + error.message; return; }
    window.open(url, "_blank", "noopener");
    button.dataset.url = url;
    clearInterval(ticking);
    const lifetime = auth.code_lifetime_secs;
    if (!lifetime) { countdown.textContent = "Paste the code (or the whole address) and send."; return; }
    let left = lifetime;
    const tick = () => {
      countdown.textContent = left > 0 ? `The code lives ${lifetime} s: ${left} s left to paste it and send.` : "The code has expired: get a new one.";
      countdown.classList.toggle("reason", left <= 5);
      if (left-- <= 0) clearInterval(ticking);
    };
    tick();
    ticking = setInterval(tick, 1000);
  });
}

function codeFrom(pasted) {
  const text = pasted.trim();
  const at = text.indexOf("code=");
  if (at >= 0) { const code = text.slice(at + 5).split(/[&#]/)[0]; return code || null; }
  return /^[A-Za-z0-9._-]+$/.test(text) ? text : null;
}

function tokenWords(t) {
  const k = t.token;
  const why = [k.reason.tag, k.reason.description].filter(Boolean).join(": ");
  switch (k.state) {
    case "received": return `<p class="ok-text"><b>Token received</b> (fingerprint <code class="fingerprint">${esc(k.fingerprint)}</code>).</p>
      <p>Next refresh at ${esc(time(k.next_refresh))}${k.last_refresh ? ` · last refresh ${esc(time(k.last_refresh))}` : ""}.</p>`;
    case "escalated": return `<p class="reason"><b>Escalated:</b> the token is not updated${why ? ` — <span class="why">${esc(why)}</span>` : ""}.</p>
      <p>${k.fingerprint ? `Last token: fingerprint <code>${esc(k.fingerprint)}</code>. ` : ""}Paste a new code below to recover.</p>`;
    case "failed": return `<p class="reason"><b>Failed</b> in ${esc(k.node)}${why ? `: ${esc(why)}` : ""}.</p>`;
    case "exchanging": return `<p><b>Exchanging the code</b> for a token…</p>`;
    default: return `<p><b>Waiting for a code.</b></p>`;
  }
}

function tokenPanel(p, t) {
  const auth = p.authorize;
  const lives = auth.code_lifetime_secs ? `; it lives ${auth.code_lifetime_secs} seconds` : "";
  return `<section class="card token" aria-label="The token"><h2>The token</h2><div id="token-state" aria-live="polite">${tokenWords(t)}</div>
    <form id="new-code" class="form" novalidate><h3>Paste a new code</h3>${codeField({name: auth.code_param, required: false, description: `A new authorization code re-authorizes the task${lives}.`}, auth)}
    <button id="send-code">Send code</button><p class="refusal reason" role="alert"></p></form></section>`;
}

function wireToken(p, t) {
  const form = document.getElementById("new-code");
  const codeInput = form.querySelector(`[data-param="${CSS.escape(p.authorize.code_param)}"]`);
  wireCode(form, p.authorize, t.process, t.ref || String(t.id), name => undefined);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const refusal = form.querySelector(".refusal");
    refusal.textContent = "";
    try {
      await post(`/ui/api/processes/${t.process}/code`, {ref: t.ref || String(t.id), code: codeInput.value});
      codeInput.value = "";
      form.dispatchEvent(new Event("code-sent"));
      form.querySelector("#countdown").textContent = "Code sent: the task exchanges it now.";
    } catch (error) { refusal.textContent = "error: " + error.message; }
  });
}

// ----- Task actions: each asks to be confirmed -----------------------------------

function taskActions(t) {
  const box = document.getElementById("actions");
  const result = document.getElementById("action-result");
  const finished = t.status === "done" || t.status === "failed";
  box.innerHTML = `<span id="task-status" class="muted">${esc(t.node)} · ${esc(t.status)}</span>
    <details><summary>Modify (merge data)</summary><form id="modify" class="form">
      <label>Data to merge (JSON)<textarea id="modify-json" rows="4" spellcheck="false">{}</textarea></label>
      ${finished ? `<label class="check"><input type="checkbox" id="modify-force"> The task has finished: merge anyway (--force)</label>` : ""}
      <button>Modify…</button></form></details>
    ${t.status === "failed" ? `<button type="button" id="retry">Retry ${esc(t.node)}…</button>` : ""}
    <form id="goto" class="inline"><label>Move to node <select id="goto-node">${(t.nodes || []).map(n => `<option${n === t.node ? " selected" : ""}>${esc(n)}</option>`).join("")}</select></label>
      <button>Move…</button></form>
    <button type="button" id="delete" class="danger">Delete…</button>
    <div id="confirm" role="alertdialog" aria-modal="true" hidden></div>`;
  // The confirmation takes the focus; while it is open Tab and Shift+Tab stay on its two
  // buttons; Escape or Cancel closes it, and the focus goes back to the button that asked.
  const dialog = document.getElementById("confirm");
  let opener = null;
  const close = () => {
    dialog.hidden = true; dialog.innerHTML = "";
    if (opener && opener.isConnected) opener.focus();
    opener = null;
  };
  dialog.addEventListener("keydown", (event) => {
    if (dialog.hidden) return;
    if (event.key === "Escape") { event.preventDefault(); close(); return; }
    if (event.key !== "Tab") return;
    const buttons = [...dialog.querySelectorAll("button")];
    const at = buttons.indexOf(document.activeElement);
    const next = (at + (event.shiftKey ? buttons.length - 1 : 1)) % buttons.length;
    event.preventDefault();
    buttons[next].focus();
  });
  const confirmThen = (question, yes, action) => {
    opener = document.activeElement;
    dialog.hidden = false;
    dialog.innerHTML = `<p id="confirm-question">${esc(question)}</p><button type="button" id="confirm-yes">${esc(yes)}</button> <button type="button" id="confirm-no">Cancel</button>`;
    dialog.setAttribute("aria-labelledby", "confirm-question");
    document.getElementById("confirm-no").addEventListener("click", close);
    document.getElementById("confirm-yes").addEventListener("click", async () => {
      result.className = ""; result.textContent = "";
      close();
      try { await action(); } catch (error) { result.className = "reason"; result.textContent = "error: " + error.message; }
    });
    document.getElementById("confirm-yes").focus();
  };
  const act = (name, body) => post(`/ui/api/tasks/${t.process}/${t.id}/${name}`, body);
  document.getElementById("modify").addEventListener("submit", (event) => {
    event.preventDefault();
    let data;
    try { data = JSON.parse(document.getElementById("modify-json").value || "{}"); }
    catch (error) { result.className = "reason"; result.textContent = "error: the data is not JSON: " + error.message; return; }
    const force = !!(document.getElementById("modify-force") || {}).checked;
    confirmThen(`Merge ${Object.keys(data).join(", ") || "nothing"} into task ${t.id}?`, "Yes, modify", async () => {
      await act("modify", {data, force}); result.textContent = `Task ${t.id} modified.`;
    });
  });
  const retry = document.getElementById("retry");
  if (retry) retry.addEventListener("click", () => confirmThen(`Run ${t.node} again for task ${t.id}?`, "Yes, retry", async () => {
    await act("retry", {}); result.textContent = `Task ${t.id} runs ${t.node} again.`;
  }));
  document.getElementById("goto").addEventListener("submit", (event) => {
    event.preventDefault();
    const node = document.getElementById("goto-node").value;
    confirmThen(`Move task ${t.id} from ${t.node} to ${node}?`, "Yes, move", async () => {
      await act("goto", {node}); result.textContent = `Task ${t.id} moves to ${node}.`;
    });
  });
  document.getElementById("delete").addEventListener("click", () => confirmThen(`Delete task ${t.id}, its data and history? This cannot be undone.`, "Yes, delete", async () => {
    await act("delete", {}); location.hash = `#/p/${t.process}`;
  }));
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await post("/ui/logout", {}); } catch (_) { /* already out */ }
  csrf = null;
  showLogin("");
});
window.addEventListener("hashchange", route);
route();
