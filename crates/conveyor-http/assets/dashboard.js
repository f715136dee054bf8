"use strict";
const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const live = document.getElementById("live");
let timer = null;

function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
}
function time(ms) { return ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : ""; }

async function api(path) {
  const response = await fetch(path, {credentials: "same-origin"});
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
    if (response.ok) { route(); } else { showLogin("Wrong credentials."); }
  };
}

function stop() { if (timer) { clearInterval(timer); timer = null; } }
function every(ms, fn) { stop(); timer = setInterval(fn, ms); }

async function listPage() {
  crumbs.textContent = "/ processes";
  const draw = async () => {
    const processes = await api("/ui/api/processes");
    const rows = processes.map(p => `<tr class="${p.in_escalation > 0 ? "escalated" : ""}" data-process="${p.id}">
      <td class="num">${p.id}</td><td>${p.alias ? "@" + esc(p.alias) : ""}</td>
      <td><a href="#/p/${p.id}">${esc(p.title)}</a></td><td class="num">${p.tasks}</td>
      <td class="num">${p.in_escalation > 0 ? `<span class="badge warn">${p.in_escalation} in escalation</span>` : `<span class="badge ok">0</span>`}</td></tr>`).join("");
    main.innerHTML = `<h1>Processes</h1>${processes.length ? `<table><thead><tr><th>id</th><th>alias</th><th>title</th><th>tasks</th><th>escalations</th></tr></thead><tbody>${rows}</tbody></table>`
      : `<p class="muted">No processes yet: <code>conveyor process clone bitrix_oauth --alias bitrix</code></p>`}`;
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
    <div class="split"><div class="card diagram" id="diagram">${p.svg}</div>
    <div>${escalations.length ? `<h2 class="warn-title">Escalations</h2><div id="escalations"></div>` : ""}
    <h2 id="tasks-title">Tasks</h2><div id="tasks" class="muted">Click a node on the diagram to see its tasks.</div>
    <h2>Nodes</h2><table id="nodes"><thead><tr><th>node</th><th>kind</th><th>now</th><th>total</th></tr></thead><tbody></tbody></table></div></div>`;
  const nodeRows = (nodes) => nodes.map(n => `<tr class="${n.escalation && n.now > 0 ? "escalated" : ""}">
      <td><a href="#/p/${p.id}/${encodeURIComponent(n.id)}">${esc(n.id)}</a></td><td>${esc(n.kind)}</td>
      <td class="num" data-now-for="${esc(n.id)}">${n.now}</td><td class="num" data-total-for="${esc(n.id)}">${n.total}</td></tr>`).join("");
  main.querySelector("#nodes tbody").innerHTML = nodeRows(p.nodes);
  main.querySelectorAll("#diagram [data-node]").forEach(el => {
    el.addEventListener("click", () => { location.hash = `#/p/${p.id}/${encodeURIComponent(el.getAttribute("data-node"))}`; });
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
    into.innerHTML = tasks.length ? `<table><thead><tr><th>task</th><th>ref</th><th>status</th><th>why</th></tr></thead><tbody>${
      tasks.map(t => `<tr><td><a href="#/t/${p.id}/${t.id}">${t.id}</a></td><td>${esc(t.ref ?? "")}</td><td>${esc(t.status)}</td>
        <td class="reason">${esc([t.reason.tag, t.reason.description].filter(Boolean).join(": "))}</td></tr>`).join("")}</tbody></table>`
      : `<p class="muted">No task in ${esc(node)} now.</p>`;
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
      box.innerHTML = "";
      for (const e of escalations) { const div = document.createElement("div"); box.appendChild(div); await showTasks(e.id, div, false); }
    }
    if (selected) await showTasks(selected, document.getElementById("tasks"), true);
    live.textContent = "live · " + new Date().toLocaleTimeString();
  };
  await refresh();
  every(1000, () => refresh().catch(() => {}));
}

async function taskPage(processId, taskId) {
  stop();
  const t = await api(`/ui/api/tasks/${encodeURIComponent(processId)}/${encodeURIComponent(taskId)}`);
  crumbs.innerHTML = `/ <a href="#/">processes</a> / <a href="#/p/${t.process}">process ${t.process}</a> / task ${t.id}`;
  const why = [t.reason.tag, t.reason.description].filter(Boolean).join(": ");
  main.innerHTML = `<h1>Task ${t.id}${t.ref ? ` <span class="muted">ref ${esc(t.ref)}</span>` : ""}</h1>
    <p>In <a href="#/p/${t.process}/${encodeURIComponent(t.node)}">${esc(t.node)}</a> · ${esc(t.status)}${t.wake_at ? " until " + time(t.wake_at) : ""}
    ${why ? ` · <span class="reason">${esc(why)}</span>` : ""}</p>
    <div class="grid"><div><h2>Data</h2><pre>${esc(JSON.stringify(t.data, null, 2))}</pre></div>
    <div><h2>History</h2><ul class="timeline">${t.history.map(h => `<li class="${h.event === "error" ? "error" : ""}">
      <span class="muted">${time(h.at)}</span> <b>${esc(h.node)}</b> ${esc(h.event)} ${esc(describe(h))}</li>`).join("")}</ul></div></div>`;
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
    default: return "";
  }
}

async function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "p" && parts[1]) await processPage(parts[1], parts[2]);
    else if (parts[0] === "t" && parts[1] && parts[2]) await taskPage(parts[1], parts[2]);
    else await listPage();
  } catch (error) {
    if (error.message !== "login") main.innerHTML = `<p class="reason">${esc(error.message)}</p>`;
  }
}
window.addEventListener("hashchange", route);
route();
