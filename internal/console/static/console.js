// Bulkhead console: WebAuthn ceremonies and signed-in actions. Served from
// the console's own origin; the pages allow no inline script.
"use strict";

const b64u = {
  decode(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(s + "===".slice((s.length + 3) % 4));
    return Uint8Array.from(bin, (c) => c.charCodeAt(0)).buffer;
  },
  encode(buf) {
    let bin = "";
    for (const b of new Uint8Array(buf)) bin += String.fromCharCode(b);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  },
};

function say(text, error) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

function csrf() {
  const m = document.querySelector('meta[name="bulkhead-csrf"]');
  return m ? m.content : "";
}

async function post(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-Bulkhead-CSRF": csrf() },
    body: JSON.stringify(body === undefined ? {} : body),
  });
  const text = await resp.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch (e) { data = { error: text }; }
  if (!resp.ok) throw new Error(data.message || data.error || ("HTTP " + resp.status));
  return data;
}

async function register() {
  const link = location.hash.slice(1);
  say("Waiting for your authenticator…");
  const opts = (await post("/console/api/register/begin", { link })).publicKey;
  opts.challenge = b64u.decode(opts.challenge);
  opts.user.id = b64u.decode(opts.user.id);
  for (const c of opts.excludeCredentials || []) c.id = b64u.decode(c.id);
  const cred = await navigator.credentials.create({ publicKey: opts });
  await post("/console/api/register/finish", {
    id: cred.id, rawId: b64u.encode(cred.rawId), type: cred.type,
    response: {
      attestationObject: b64u.encode(cred.response.attestationObject),
      clientDataJSON: b64u.encode(cred.response.clientDataJSON),
      transports: cred.response.getTransports ? cred.response.getTransports() : [],
    },
  });
  history.replaceState(null, "", location.pathname);
  say("Passkey registered. You can now sign in.");
}

async function assertion(opts) {
  opts.challenge = b64u.decode(opts.challenge);
  for (const c of opts.allowCredentials || []) c.id = b64u.decode(c.id);
  const cred = await navigator.credentials.get({ publicKey: opts });
  return {
    id: cred.id, rawId: b64u.encode(cred.rawId), type: cred.type,
    response: {
      authenticatorData: b64u.encode(cred.response.authenticatorData),
      clientDataJSON: b64u.encode(cred.response.clientDataJSON),
      signature: b64u.encode(cred.response.signature),
      userHandle: cred.response.userHandle ? b64u.encode(cred.response.userHandle) : null,
    },
  };
}

async function signin() {
  say("Waiting for your authenticator…");
  const opts = (await post("/console/api/login/begin")).publicKey;
  await post("/console/api/login/finish", await assertion(opts));
  location.assign("/console/");
}

async function signout() {
  await post("/console/api/logout");
  location.assign("/console/login");
}

// decide confirms an approval or a denial with the passkey: the
// assertion's challenge binds this request and this decision.
async function decide(button) {
  const id = button.dataset.id;
  const decision = button.dataset.decision;
  const reason = document.getElementById("reason-" + id).value;
  say("Confirm with your authenticator…");
  const begun = await post("/console/api/approvals/" + encodeURIComponent(id) + "/begin", { decision, reason });
  const done = await post("/console/api/approvals/" + encodeURIComponent(id) + "/finish", await assertion(begun.publicKey));
  say("Request " + done.elevation + ": " + done.status + " (" + done.approvals + " approval(s))");
}

for (const b of document.querySelectorAll("button.decide")) {
  b.addEventListener("click", () => decide(b).catch((e) => say(e.message, true)));
}

// The live decisions table follows the audit stream.
const live = document.getElementById("decisions");
if (live) {
  const body = live.querySelector("tbody");
  // Each event is named by its action.
  const actions = ["gateway.call_tool", "gateway.read_resource", "gateway.get_prompt", "gateway.list_tools", "gateway.connect", "gateway.http"];
  const src = new EventSource(live.dataset.stream + "?action=" + actions.join(","));
  const show = (msg) => {
    const ev = JSON.parse(msg.data);
    const tr = document.createElement("tr");
    tr.className = ev.decision;
    for (const v of [ev.seq, (ev.time || "").replace("T", " ").slice(0, 19), (ev.actor || {}).id, ev.action, ev.target, ev.decision, (ev.reasons || []).join("; ")]) {
      const td = document.createElement("td");
      td.textContent = v === undefined ? "" : String(v);
      tr.appendChild(td);
    }
    body.prepend(tr);
    while (body.rows.length > 500) body.deleteRow(-1);
  };
  for (const a of actions) src.addEventListener(a, show);
}

async function verify() {
  const out = document.getElementById("verified");
  out.textContent = "verifying…";
  const r = await post("/console/api/audit/verify");
  out.textContent = r.ok ? "ok: " + r.summary : "DOES NOT VERIFY: " + r.error;
  out.className = r.ok ? "ok" : "error";
}

for (const b of document.querySelectorAll("button.agent-action")) {
  b.addEventListener("click", async () => {
    const { agent, action } = b.dataset;
    if (!confirm(action[0].toUpperCase() + action.slice(1) + " agent " + agent + "?")) return;
    try {
      await post("/console/api/agents/" + encodeURIComponent(agent), { action, reason: action + "d in the console" });
      location.reload();
    } catch (e) { say(e.message, true); }
  });
}

function on(id, fn) {
  const el = document.getElementById(id);
  if (el) el.addEventListener("click", () => fn().catch((e) => say(e.message, true)));
}

on("register", register);
on("signin", signin);
on("signout", signout);
on("verify", verify);
