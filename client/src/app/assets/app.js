"use strict";

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || response.statusText);
  return body;
}

function item(text, detail) {
  const li = document.createElement("li");
  li.textContent = text;
  if (detail) {
    const small = document.createElement("small");
    small.textContent = " " + detail;
    li.appendChild(small);
  }
  return li;
}

async function show() {
  const me = await api("/api/me");
  document.getElementById("me").textContent =
    (me.display_name ? me.display_name + " · " : "") + me.user;
  const list = document.getElementById("contacts");
  list.replaceChildren();
  const { contacts } = await api("/api/contacts");
  if (contacts.length === 0) list.appendChild(item("No contacts yet."));
  for (const contact of contacts) {
    // The user name always stands beside a display name: anyone can claim any name.
    const named = contact.display_name !== contact.user;
    list.appendChild(item(named ? contact.display_name : contact.user, named ? contact.user : ""));
  }
}

show().catch((error) => {
  document.getElementById("me").textContent = "Cannot reach the client: " + error.message;
});
