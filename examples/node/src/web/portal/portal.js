// The patient portal: loads the patient's Ed25519 key into WebCrypto, signs the node's
// unsigned templates, and shows what the chain holds for the patient. No key leaves the page.
"use strict";

const PKCS8_ED25519_PREFIX = "302e020100300506032b657004220420";
let signingKey = null;
let publicHex = null;
let refreshing = false;

const $ = (id) => document.getElementById(id);

function fromHex(hex) {
  hex = hex.trim();
  if (!/^([0-9a-fA-F]{2})*$/.test(hex)) throw new Error("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(2 * i, 2), 16);
  return out;
}
function toHex(bytes) {
  return Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, "0")).join("");
}
function fromBase64Url(s) {
  const b64 = s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4);
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}
const short = (id) => (id || "").slice(0, 8);

function say(text, error) {
  const el = $("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: body ? { "content-type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  if (!res.ok) {
    const e = json && json.error ? json.error : { code: String(res.status), message: res.statusText };
    throw new Error(e.message + " (" + e.code + ")");
  }
  return json;
}

// A seed (64 hex digits) or a JWK {kty: "OKP", crv: "Ed25519", d, x}.
async function loadKey(text) {
  text = text.trim();
  let jwk;
  if (text.startsWith("{")) {
    jwk = JSON.parse(text);
    if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || !jwk.d || !jwk.x) throw new Error("not an Ed25519 JWK");
  } else {
    const seed = fromHex(text);
    if (seed.length !== 32) throw new Error("a seed is 32 bytes (64 hex digits)");
    const pkcs8 = new Uint8Array([...fromHex(PKCS8_ED25519_PREFIX), ...seed]);
    // Imported extractable once, only to learn the public key; the signing key is not.
    const tmp = await crypto.subtle.importKey("pkcs8", pkcs8, { name: "Ed25519" }, true, ["sign"]);
    jwk = await crypto.subtle.exportKey("jwk", tmp);
  }
  signingKey = await crypto.subtle.importKey(
    "jwk", { kty: "OKP", crv: "Ed25519", d: jwk.d, x: jwk.x }, { name: "Ed25519" }, false, ["sign"]);
  publicHex = toHex(fromBase64Url(jwk.x));
}

// Asks for the template of `op`, signs it here, submits the signature, waits for a block.
async function signAndSubmit(op, what) {
  say(what + ": preparing…");
  const t = await api("POST", "/tx/template", { signer: publicHex, op });
  const sig = await crypto.subtle.sign({ name: "Ed25519" }, signingKey, fromHex(t.signing_message));
  const sent = await api("POST", "/tx", { unsigned_tx: t.unsigned_tx, signature: toHex(sig) });
  say(what + ": submitted " + short(sent.id) + ", waiting for a block…");
  for (let i = 0; i < 120; i++) {
    const s = await api("GET", "/tx/" + sent.id);
    if (s.status === "included") {
      say(what + ": recorded in block " + s.height + " (" + short(sent.id) + ")");
      await refresh();
      return;
    }
    if (s.status === "refused") throw new Error(s.reason);
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error("not included yet; see transaction " + sent.id);
}

function act(op, what) {
  signAndSubmit(op, what).catch((e) => say(what + " failed: " + e.message, true));
}

function li(text, cls) {
  const el = document.createElement("li");
  el.textContent = text;
  if (cls) el.className = cls;
  return el;
}
function button(label, cls, onClick) {
  const b = document.createElement("button");
  b.textContent = label;
  b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}
const date = (t) => new Date(t * 1000).toISOString().replace(".000", "");

async function refresh() {
  if (!publicHex || refreshing) return;
  refreshing = true;
  try {
    const [rels, grants, audit] = await Promise.all([
      api("GET", "/patients/" + publicHex + "/relationships"),
      api("GET", "/patients/" + publicHex + "/grants"),
      api("GET", "/patients/" + publicHex + "/audit"),
    ]);
    const pending = $("pending"), all = $("relationships"), sel = $("grant-rel");
    pending.replaceChildren();
    all.replaceChildren();
    const chosen = sel.value;
    sel.replaceChildren();
    for (const r of rels) {
      const who = (r.counterparty_name || "provider") + " (" + short(r.counterparty) + ")";
      all.append(li(who + " — " + r.status + ", " + r.pointers + " record(s)", "relationship " + r.status));
      if (r.status === "pending") {
        const item = li(who + " asks to keep your records ");
        item.dataset.relationship = r.relationship;
        item.append(button("Accept", "accept", () =>
          act({ op: "accept_relationship", relationship: r.relationship }, "accept " + who)));
        item.append(button("Refuse", "refuse", () =>
          act({ op: "reject_relationship", relationship: r.relationship, reason: "refused in the portal" }, "refuse " + who)));
        pending.append(item);
      }
      if (r.status === "accepted") {
        const o = document.createElement("option");
        o.value = r.relationship;
        o.textContent = who;
        sel.append(o);
      }
    }
    if (chosen) sel.value = chosen;
    if (!pending.children.length) pending.append(li("none"));
    const g = $("grants");
    g.replaceChildren();
    for (const x of grants) {
      const text = "grant " + short(x.grant) + ": " + x.viewer + " may " + x.actions.join(", ") +
        " for " + x.purposes.join(", ") + " until " + date(x.end) + (x.revoked ? " — revoked" : "");
      const item = li(text, "grant" + (x.revoked ? " revoked" : ""));
      item.dataset.grant = x.grant;
      if (!x.revoked) {
        item.append(button("Revoke", "revoke", () =>
          act({ op: "revoke_grant", grant: x.grant, reason: "revoked in the portal" }, "revoke grant " + short(x.grant))));
      }
      g.append(item);
    }
    const a = $("audit");
    a.replaceChildren();
    for (const e of audit) {
      a.append(li("#" + e.seq + " block " + e.height + " " + date(e.time) + ": " + e.text, e.access ? "access" : "change"));
    }
  } catch (e) {
    say("could not refresh: " + e.message, true);
  } finally {
    refreshing = false;
  }
}

$("load").addEventListener("click", async () => {
  try {
    await loadKey($("key").value);
    $("key").value = "";
    $("whoami").textContent = "account " + publicHex;
    say("key loaded");
    await refresh();
  } catch (e) {
    say("cannot load the key: " + e.message, true);
  }
});

$("grant").addEventListener("click", () => {
  const relationship = $("grant-rel").value;
  const viewer = $("viewer").value.trim();
  const days = parseInt($("days").value, 10);
  if (!relationship) return say("accept a relationship first", true);
  act({
    op: "grant", relationship, viewer, actions: ["read"], purposes: [$("purpose").value],
    period: { days },
  }, "grant " + short(viewer));
});

setInterval(refresh, 1000);
