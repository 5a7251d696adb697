// Roost's app: one page, a view per screen (chosen by the address's #fragment), all data from
// the app's own JSON API, live updates from its event stream. No framework, nothing fetched
// from anywhere else. Text from others is only ever set as text, never parsed as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);

// Builds an element: h("li", { class: "x", onclick: f }, "text", child, …).
function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

// Calls the API; answers its JSON, or throws an Error with the API's message.
async function api(method, path, body, contentType) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.body = contentType ? body : JSON.stringify(body);
    options.headers["content-type"] = contentType || "application/json";
  }
  const response = await fetch(path, options);
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.message || response.statusText);
  return answer;
}
const get = (path) => api("GET", path);
const enc = encodeURIComponent;

function toast(text, isError) {
  const box = $("#toast");
  box.textContent = text;
  box.className = isError ? "toast error" : "toast";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.hidden = true), isError ? 6000 : 2500);
}

// Runs an action from a form or button: disables it meanwhile, shows what failed.
async function act(control, action) {
  if (control) control.disabled = true;
  try {
    return await action();
  } catch (error) {
    toast(error.message, true);
  } finally {
    if (control) control.disabled = false;
  }
}

// A form that calls `submit(values)` with its named fields.
function form(attributes, fields, submit) {
  const element = h("form", attributes, fields);
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = Object.fromEntries(new FormData(element).entries());
    const button = element.querySelector("button[type=submit]");
    await act(button, () => submit(values, element));
  });
  return element;
}

function avatar(url, name, large) {
  const className = large ? "avatar large" : "avatar";
  if (url) return h("img", { class: className, src: url, alt: "" });
  return h("span", { class: className, "aria-hidden": "true" }, (name || "?").slice(0, 1).toUpperCase());
}

// A person as the pages name them: the display name they chose, and always the user name
// beside it (anyone can choose any display name).
function who(user, displayName) {
  const named = displayName && displayName !== user;
  return h("span", { class: "who" }, h("strong", {}, named ? displayName : user), named ? h("small", {}, user) : null);
}

function time(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

// ---- the state of the page

const page = { me: null, view: null };

async function loadMe() {
  page.me = await get("/api/me");
  const me = $("#me");
  me.replaceChildren();
  if (!page.me.enrolled) return;
  const url = page.me.avatar ? "/api/profile/avatar?" + Date.now() : null;
  me.append(avatar(url, page.me.display_name || page.me.user), who(page.me.user, page.me.display_name));
}

async function countRequests() {
  const { requests } = await get("/api/requests");
  const count = $("#request-count");
  count.textContent = requests.length;
  count.hidden = requests.length === 0;
  return requests;
}

function messageList(messages) {
  if (messages.length === 0) return [h("p", { class: "empty" }, "No messages yet.")];
  return messages.map((m) =>
    h("div", { class: m.from === page.me.user ? "message mine" : "message" },
      m.text, h("small", {}, (m.from === page.me.user ? "you" : m.from || "unknown sender") + " · " + time(m.at))));
}

// Replaces the messages shown, staying at the bottom if the reader was there.
function showMessages(box, messages) {
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  box.replaceChildren(...messageList(messages));
  if (atBottom || !box.dataset.shown) box.scrollTop = box.scrollHeight;
  box.dataset.shown = "1";
}

// ---- views: each builds its page once and answers a refresh() that reloads its data.

const views = {
  async firstRun() {
    const tokenField = h("label", { id: "token-field" }, "Registration token (if your server asks for one)",
      h("input", { type: "text", name: "token", autocomplete: "off" }));
    const submit = h("button", { type: "submit", id: "enrol" }, "Register");
    const modeChanged = (event) => {
      const register = event.target.value === "register";
      tokenField.hidden = !register;
      submit.textContent = register ? "Register" : "Add this device";
    };
    const body = form({ class: "stack", id: "first-run" }, [
      h("label", {}, h("span", {}, h("input", { type: "radio", name: "mode", value: "register", checked: true, onchange: modeChanged }), " I am new here: register")),
      h("label", {}, h("span", {}, h("input", { type: "radio", name: "mode", value: "add_device", onchange: modeChanged }), " I have an account: add this device")),
      h("label", {}, "Homeserver address", h("input", { type: "url", name: "server", required: true, placeholder: "https://roost.example.org" })),
      h("label", {}, "User name", h("input", { type: "text", name: "user", required: true, placeholder: "name@example.org" })),
      h("label", {}, "Password", h("input", { type: "password", name: "password", required: true })),
      tokenField,
      submit,
    ], async (values) => {
      await api("POST", "/api/enrol", values);
      toast("Welcome to Roost.");
      await start();
    });
    return { title: "Welcome", body: [h("p", {}, "This app keeps your keys on this computer. Register a new user on your community's homeserver, or add this device to the user you have."), body] };
  },

  async contacts() {
    const list = h("ul", { class: "list", id: "contacts" });
    const connect = form({ class: "row", id: "connect" }, [
      h("input", { type: "text", name: "user", required: true, placeholder: "name@example.org", "aria-label": "User to connect with" }),
      h("button", { type: "submit" }, "Connect"),
    ], async (values, element) => {
      const connected = await api("POST", "/api/connect", values);
      element.reset();
      toast("Asked " + connected.peer + " to connect. You can chat once they accept.");
    });
    async function refresh() {
      const { contacts } = await get("/api/contacts");
      list.replaceChildren(...(contacts.length ? contacts.map((c) =>
        h("li", { "data-user": c.user },
          avatar(c.avatar ? "/api/contacts/" + enc(c.user) + "/avatar" : null, c.display_name),
          h("a", { class: "grow", href: "#chat/" + enc(c.user) }, who(c.user, c.display_name)),
          h("a", { href: "#chat/" + enc(c.user) }, "Chat"))) : [h("li", { class: "empty" }, "No contacts yet: connect with someone by their user name.")]));
    }
    return { title: "Contacts", body: [connect, list], refresh, on: ["groups", "messages"] };
  },

  async requests() {
    const list = h("ul", { class: "list", id: "requests" });
    async function showProfile(request, item, button) {
      const profile = await get("/api/requests/" + enc(request.id) + "/profile");
      const url = profile.avatar ? "/api/requests/" + enc(request.id) + "/avatar" : null;
      button.remove();
      item.after(h("li", { class: "profile-card", "data-profile": request.id },
        avatar(url, profile.display_name || request.from, true),
        h("div", {}, who(request.from, profile.display_name), h("p", {}, profile.about),
          h("p", { class: "self-declared" }, "Self-declared: this is what " + request.from + " says about themselves."))));
    }
    async function refresh() {
      const requests = await countRequests();
      list.replaceChildren(...(requests.length ? requests.map((r) => {
        const item = h("li", { "data-request": r.id });
        const show = h("button", { class: "quiet", "data-action": "profile" }, "Show profile");
        show.addEventListener("click", () => act(show, () => showProfile(r, item, show)));
        const accept = h("button", { "data-action": "accept" }, "Accept");
        accept.addEventListener("click", () => act(accept, async () => {
          await api("POST", "/api/requests/" + enc(r.id) + "/accept");
          toast("Connected with " + r.from + ".");
          location.hash = "#chat/" + enc(r.from);
        }));
        const decline = h("button", { class: "danger", "data-action": "decline" }, "Decline");
        decline.addEventListener("click", () => act(decline, async () => {
          await api("POST", "/api/requests/" + enc(r.id) + "/decline");
          await refresh();
        }));
        item.append(h("span", { class: "grow" }, h("strong", {}, r.from), h("small", {}, " asked to connect · " + time(r.received_at))),
          r.has_profile ? show : null, accept, decline);
        return item;
      }) : [h("li", { class: "empty" }, "No requests waiting.")]));
    }
    return { title: "Connection requests", body: [h("p", { class: "muted" }, "Nothing about a sender is fetched until you ask to see their profile."), list], refresh, on: ["requests"] };
  },

  async chat(user) {
    const box = h("div", { class: "messages", id: "messages" });
    const send = form({ class: "row", id: "send" }, [
      h("input", { type: "text", name: "text", required: true, autocomplete: "off", placeholder: "Write a message", "aria-label": "Message" }),
      h("button", { type: "submit" }, "Send"),
    ], async (values, element) => {
      await api("POST", "/api/chat/" + enc(user), values);
      element.reset();
      await refresh();
    });
    const heading = h("span", { class: "person" }, who(user));
    async function refresh() {
      const [{ messages }, { contacts }] = await Promise.all([get("/api/chat/" + enc(user)), get("/api/contacts")]);
      showMessages(box, messages);
      // The contact's shared profile may arrive after the connection.
      const contact = contacts.find((c) => c.user === user) || { user };
      heading.replaceChildren(avatar(contact.avatar ? "/api/contacts/" + enc(user) + "/avatar" : null, contact.display_name || user),
        who(user, contact.display_name));
    }
    return { title: "Chat", heading, body: [box, send], refresh, on: ["messages", "groups"] };
  },

  async groups() {
    const list = h("ul", { class: "list", id: "groups" });
    const create = form({ class: "row", id: "create-group" }, [
      h("input", { type: "text", name: "name", required: true, placeholder: "A name for the group", "aria-label": "Group name" }),
      h("button", { type: "submit" }, "Create group"),
    ], async (values) => {
      const group = await api("POST", "/api/groups", values);
      location.hash = "#group/" + group.id;
    });
    async function refresh() {
      const { groups } = await get("/api/groups");
      list.replaceChildren(...(groups.length ? groups.map((g) =>
        h("li", { "data-group": g.name }, avatar(null, g.name),
          h("a", { class: "grow", href: "#group/" + g.id }, h("strong", {}, g.name)),
          g.removed ? h("small", {}, "you were removed") : null)) : [h("li", { class: "empty" }, "No groups yet.")]));
    }
    return { title: "Groups", body: [create, list], refresh, on: ["groups"] };
  },

  async group(id) {
    const box = h("div", { class: "messages", id: "messages" });
    const members = h("ul", { class: "list", id: "members" });
    const heading = h("span", {});
    const send = form({ class: "row", id: "send" }, [
      h("input", { type: "text", name: "text", required: true, autocomplete: "off", placeholder: "Write to the group", "aria-label": "Message" }),
      h("button", { type: "submit" }, "Send"),
    ], async (values, element) => {
      await api("POST", "/api/groups/" + id + "/messages", values);
      element.reset();
      await refresh();
    });
    const choices = h("select", { name: "user", id: "add-member-user", "aria-label": "Contact to add" });
    const add = form({ class: "row", id: "add-member" }, [choices, h("button", { type: "submit" }, "Add")],
      async (values) => {
        await api("POST", "/api/groups/" + id + "/members", values);
        toast("Added " + values.user + ".");
        await refresh();
      });
    const leave = h("button", { class: "danger", id: "leave" }, "Leave the group");
    leave.addEventListener("click", () => act(leave, async () => {
      await api("POST", "/api/groups/" + id + "/leave");
      location.hash = "#groups";
    }));
    async function refresh() {
      const group = await get("/api/groups/" + id);
      heading.textContent = group.name;
      showMessages(box, group.messages);
      send.hidden = add.hidden = leave.hidden = group.removed;
      members.replaceChildren(...group.members.map((m) => {
        const you = m.user === page.me.user;
        const item = h("li", { "data-user": m.user }, h("span", { class: "grow" }, who(m.user, m.display_name), you ? h("small", {}, " (you)") : null));
        if (m.user !== page.me.user) {
          const remove = h("button", { class: "danger", "data-action": "remove" }, "Remove");
          remove.addEventListener("click", () => act(remove, async () => {
            await api("DELETE", "/api/groups/" + id + "/members/" + enc(m.user));
            toast("Removed " + m.user + ".");
            await refresh();
          }));
          item.append(remove);
        }
        return item;
      }));
      const { contacts } = await get("/api/contacts");
      const inGroup = new Set(group.members.map((m) => m.user));
      choices.replaceChildren(...contacts.filter((c) => !inGroup.has(c.user)).map((c) =>
        h("option", { value: c.user }, c.display_name !== c.user ? c.display_name + " (" + c.user + ")" : c.user)));
      add.hidden = group.removed || choices.options.length === 0;
      if (group.removed) members.replaceChildren(h("li", { class: "empty" }, "You are no longer in this group."));
    }
    const side = h("aside", {}, h("h2", {}, "Members"), members, add, leave);
    return { title: "Group", heading, body: [h("div", { class: "columns" }, h("div", {}, box, send), side)], refresh, on: ["messages", "groups"] };
  },

  async profile() {
    const preview = h("span", { id: "avatar-preview" });
    const fields = {
      name: h("input", { type: "text", name: "display_name", maxlength: 64, id: "display-name" }),
      about: h("input", { type: "text", name: "about", maxlength: 280, id: "about" }),
    };
    const save = form({ class: "stack", id: "profile" }, [
      h("label", {}, "Display name", fields.name),
      h("label", {}, "About you", fields.about),
      h("button", { type: "submit" }, "Save"),
    ], async (values) => {
      await api("PUT", "/api/profile", values);
      toast("Profile saved; your contacts get it at their next sync.");
      await loadMe();
    });
    const file = h("input", { type: "file", id: "avatar-file", accept: "image/png,image/jpeg,image/webp", "aria-label": "Avatar image" });
    file.addEventListener("change", () => act(file, async () => {
      const image = file.files[0];
      if (!image) return;
      if (image.size > 256 * 1024) throw new Error("An avatar may take at most 256 KiB; this one takes " + Math.ceil(image.size / 1024) + " KiB.");
      await api("PUT", "/api/profile/avatar", image, image.type || "application/octet-stream");
      file.value = "";
      toast("Avatar saved.");
      await Promise.all([refresh(), loadMe()]);
    }));
    const remove = h("button", { class: "danger", id: "remove-avatar" }, "Remove avatar");
    remove.addEventListener("click", () => act(remove, async () => {
      await api("DELETE", "/api/profile/avatar");
      await Promise.all([refresh(), loadMe()]);
    }));
    async function refresh() {
      const own = await get("/api/profile");
      fields.name.value = own ? own.display_name : "";
      fields.about.value = own ? own.about : "";
      preview.replaceChildren(avatar(own && own.avatar ? "/api/profile/avatar?" + Date.now() : null, (own && own.display_name) || page.me.user, true));
      remove.hidden = !(own && own.avatar);
    }
    const avatarBox = h("div", { class: "stack card" }, preview, h("label", {}, "A new avatar (PNG, JPEG or WebP, at most 256 KiB)", file), remove);
    return { title: "Your profile", body: [h("p", { class: "muted" }, "Encrypted on this computer; your homeserver stores it without reading it. Your contacts see it, and someone you ask to connect may look at it."), h("div", { class: "columns" }, save, avatarBox)], refresh };
  },

  async devices() {
    const list = h("ul", { class: "list", id: "devices" });
    async function refresh() {
      const { devices } = await get("/api/devices");
      list.replaceChildren(...devices.map((d) => {
        const item = h("li", { "data-device": d.client_id },
          h("span", { class: "grow" }, h("strong", {}, d.this_device ? "This device" : "Device " + d.client_id.slice(0, 8)),
            h("small", {}, " added " + time(d.added_at) + " · valid until " + time(d.valid_until))));
        if (!d.this_device) {
          const remove = h("button", { class: "danger", "data-action": "remove" }, "Remove");
          remove.addEventListener("click", () => act(remove, async () => {
            if (!confirm("Remove this device? It loses access to your conversations.")) return;
            await api("DELETE", "/api/devices/" + d.client_id);
            await refresh();
          }));
          item.append(remove);
        }
        return item;
      }));
    }
    return { title: "Your devices", body: [list], refresh };
  },
};

// ---- navigation and live updates

async function render() {
  if (!page.me || !page.me.enrolled) return show(await views.firstRun(), "first-run");
  const [name, argument] = location.hash.slice(1).split("/");
  const view = views[name] && name !== "firstRun" ? name : "contacts";
  show(await views[view](argument && decodeURIComponent(argument)), view);
}

function show(view, name) {
  page.view = view;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === name || (name === "chat" && link.dataset.view === "contacts") || (name === "group" && link.dataset.view === "groups"));
  }
  const main = $("#view");
  main.dataset.view = name;
  main.replaceChildren(h("h2", {}, view.heading || view.title), ...[view.body].flat());
  if (view.refresh) act(null, view.refresh);
}

function showStatus(status) {
  const banner = $("#banner");
  const problem = status.enrolled && (!status.online || status.problem);
  banner.hidden = !problem;
  banner.textContent = problem ? status.problem || "Your homeserver cannot be reached." : "";
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("status", (event) => showStatus(JSON.parse(event.data)));
  events.addEventListener("changed", (event) => {
    const changed = JSON.parse(event.data);
    if (changed.requests) act(null, countRequests);
    const view = page.view;
    if (view && view.refresh && (view.on || []).some((what) => changed[what])) act(null, view.refresh);
  });
  // The browser reconnects by itself; while it cannot, the app itself is gone.
  events.addEventListener("error", () => {
    if (events.readyState !== EventSource.OPEN) showStatus({ enrolled: true, online: false, problem: "The app is not running (start roost-client app again)." });
  });
}

async function start() {
  await loadMe();
  $("#nav").hidden = !page.me.enrolled;
  if (page.me.enrolled) act(null, countRequests);
  await render();
}

window.addEventListener("hashchange", () => act(null, render));
start().then(listen).catch((error) => showStatus({ enrolled: true, online: false, problem: "Cannot reach the app: " + error.message }));
