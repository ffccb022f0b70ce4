// The rider page: plain JavaScript, no build step, calling the public API on the page's own origin (the gateway).
//
// What it adds to the API is only presentation: area names instead of numbers, a date and time picker instead of
// `DD-MM-YYYY:SS-MM-HH`, and the password's SHA-1 computed here (the contract takes the hash, never the password).
// Every decision stays the service's: the page checks only what it needs to build a request (an area that exists,
// a date that was picked), and shows every error the API answers next to the form or button that caused it.
// Everything a user typed is put on the page as text (textContent), never as markup.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  const state = {
    /** [{number, name}], by number, from GET /api/v1/areas. */
    areas: [],
    /** lower-cased name → number. */
    areaByName: new Map(),
    /** Who I am: a username, or "" for nobody yet. */
    me: "",
    /** The ride shown in the details card, as GET /api/v1/rides/{id} answered it. */
    ride: null,
  };

  // --- talking to the API -----------------------------------------------------------------------------------

  /** An answer the page will not go on with: `message` is a sentence for the rider. */
  class Refused extends Error {}

  function sentence(text) {
    const trimmed = String(text).trim();
    if (trimmed === "") return "";
    const first = trimmed[0].toUpperCase() + trimmed.slice(1);
    return /[.!?]$/.test(first) ? first : `${first}.`;
  }

  /**
   * Sends one request; answers {status, data} for a 2xx, throws Refused with a readable message otherwise.
   * 204 answers carry no body (data is null).
   */
  async function api(method, path, body) {
    const init = { method, headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new Refused("RideShare could not be reached. Check your connection and try again.");
    }
    const text = await response.text();
    let data = null;
    if (text !== "") {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (response.ok) return { status: response.status, data };
    const reason = data && typeof data.error === "string" ? sentence(data.error) : "";
    const id = response.headers.get("X-Request-Id");
    if (response.status >= 500) {
      // The service says only what the client may do; the request id lets an operator find the rest.
      const what = reason || "RideShare could not answer.";
      throw new Refused(`${what} Please try again in a moment.${id ? ` (request ${id})` : ""}`);
    }
    throw new Refused(reason || `The request was refused (HTTP ${response.status}).`);
  }

  // --- showing what happened ---------------------------------------------------------------------------------

  function show(element, text) {
    element.textContent = text;
    element.hidden = text === "";
  }

  function clear(...elements) {
    for (const element of elements) show(element, "");
  }

  /** An error under one input: announced, linked to the input, removed by `clearFieldError`. */
  function fieldError(input, text) {
    let p = document.getElementById(`${input.id}-error`);
    if (!p) {
      p = document.createElement("p");
      p.id = `${input.id}-error`;
      p.className = "error field-error";
      p.setAttribute("role", "alert");
      input.closest(".field").append(p);
    }
    show(p, text);
    input.setAttribute("aria-invalid", "true");
    const described = (input.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
    if (!described.includes(p.id)) input.setAttribute("aria-describedby", [...described, p.id].join(" "));
  }

  function clearFieldErrors(form) {
    for (const p of form.querySelectorAll(".field-error")) show(p, "");
    for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  }

  /** Runs `action` with `button` disabled, so a second click cannot send the request twice. */
  async function busy(button, action) {
    if (button.disabled) return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    try {
      await action();
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }

  // --- time: the contract's UTC timestamps --------------------------------------------------------------------

  const two = (n) => String(n).padStart(2, "0");

  /** "2030-05-08" and "09:53" (or "09:53:07"), read as UTC, in the contract's format "08-05-2030:00-53-09". */
  function toContract(date, time) {
    const d = /^(\d{4})-(\d{2})-(\d{2})$/.exec(date);
    const t = /^(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(time);
    if (!d || !t) return null;
    return `${d[3]}-${d[2]}-${d[1]}:${t[3] || "00"}-${t[2]}-${t[1]}`;
  }

  /** The contract's "DD-MM-YYYY:SS-MM-HH" as a Date, or null. */
  function fromContract(timestamp) {
    const m = /^(\d{2})-(\d{2})-(\d{4}):(\d{2})-(\d{2})-(\d{2})$/.exec(timestamp);
    if (!m) return null;
    return new Date(Date.UTC(+m[3], +m[2] - 1, +m[1], +m[6], +m[5], +m[4]));
  }

  const utcFormat = new Intl.DateTimeFormat("en-GB", {
    timeZone: "UTC", weekday: "short", day: "numeric", month: "short", year: "numeric",
    hour: "2-digit", minute: "2-digit",
  });
  const localFormat = new Intl.DateTimeFormat("en-GB", {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
  });

  /** "Wed 8 May 2030, 09:53 UTC", and the rider's own time beside it when their zone is not UTC. */
  function when(date) {
    const utc = `${utcFormat.format(date)} UTC`;
    if (date.getTimezoneOffset() === 0) return utc;
    return `${utc} (${localFormat.format(date)} your time)`;
  }

  function whenOf(timestamp) {
    const date = fromContract(timestamp);
    return date ? when(date) : timestamp;
  }

  function tickClock() {
    show($("clock"), `Times are in UTC, the service's time zone. It is now ${when(new Date())}.`);
  }

  // --- SHA-1 of the password ---------------------------------------------------------------------------------

  /**
   * SHA-1 (FIPS 180-4) in plain JavaScript, for pages opened over plain HTTP from another machine, where browsers
   * withhold crypto.subtle (it needs a secure context). Checked against crypto.subtle by the browser test.
   */
  function sha1HexPortable(bytes) {
    const length = bytes.length;
    const padded = (((length + 8) >> 6) + 1) << 6;
    const m = new Uint8Array(padded);
    m.set(bytes);
    m[length] = 0x80;
    const view = new DataView(m.buffer);
    view.setUint32(padded - 8, Math.floor(length / 0x20000000));
    view.setUint32(padded - 4, (length * 8) >>> 0);
    const h = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
    const w = new Uint32Array(80);
    for (let block = 0; block < padded; block += 64) {
      for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + 4 * i);
      for (let i = 16; i < 80; i++) {
        const x = w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16];
        w[i] = (x << 1) | (x >>> 31);
      }
      let [a, b, c, d, e] = h;
      for (let i = 0; i < 80; i++) {
        let f;
        let k;
        if (i < 20) { f = (b & c) | (~b & d); k = 0x5a827999; }
        else if (i < 40) { f = b ^ c ^ d; k = 0x6ed9eba1; }
        else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8f1bbcdc; }
        else { f = b ^ c ^ d; k = 0xca62c1d6; }
        const t = (((a << 5) | (a >>> 27)) + f + e + k + w[i]) >>> 0;
        e = d;
        d = c;
        c = ((b << 30) | (b >>> 2)) >>> 0;
        b = a;
        a = t;
      }
      h[0] = (h[0] + a) >>> 0;
      h[1] = (h[1] + b) >>> 0;
      h[2] = (h[2] + c) >>> 0;
      h[3] = (h[3] + d) >>> 0;
      h[4] = (h[4] + e) >>> 0;
    }
    return h.map((x) => x.toString(16).padStart(8, "0")).join("");
  }

  /** The SHA-1 of the password's UTF-8 bytes, as 40 lowercase hexadecimal digits (what the contract takes). */
  async function sha1Hex(text) {
    const bytes = new TextEncoder().encode(text);
    if (window.crypto && window.crypto.subtle) {
      const digest = new Uint8Array(await window.crypto.subtle.digest("SHA-1", bytes));
      return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
    }
    return sha1HexPortable(bytes);
  }

  // --- areas: a type-ahead over the 198 names ------------------------------------------------------------------

  const MAX_SUGGESTIONS = 8;

  function areaName(number) {
    const area = state.areas[number - 1];
    return area ? area.name : `area ${number}`;
  }

  /** The area a picker's text names: a name (any case) or its number; null when it names none. */
  function areaOf(text) {
    const value = text.trim();
    if (/^\d+$/.test(value)) {
      const number = Number(value);
      return number >= 1 && number <= state.areas.length ? number : null;
    }
    const number = state.areaByName.get(value.toLowerCase());
    return number === undefined ? null : number;
  }

  /** Names that start with what was typed first, then those that contain it. */
  function suggestions(text) {
    const typed = text.trim().toLowerCase();
    if (typed === "") return [];
    const starts = [];
    const contains = [];
    for (const area of state.areas) {
      const name = area.name.toLowerCase();
      if (name.startsWith(typed)) starts.push(area);
      else if (name.includes(typed)) contains.push(area);
    }
    return starts.concat(contains).slice(0, MAX_SUGGESTIONS);
  }

  /** A combobox (WAI-ARIA 1.2 pattern, list autocomplete): arrows move, Enter picks, Escape closes. */
  function areaPicker(field) {
    const input = field.querySelector("input");
    const list = field.querySelector("[role=listbox]");
    let options = [];
    let active = -1;

    function close() {
      list.hidden = true;
      list.replaceChildren();
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
      options = [];
      active = -1;
    }

    function highlight(index) {
      active = index;
      list.querySelectorAll("[role=option]").forEach((li, i) => {
        li.setAttribute("aria-selected", String(i === index));
        li.classList.toggle("active", i === index);
      });
      if (index >= 0) input.setAttribute("aria-activedescendant", `${list.id}-${index}`);
      else input.removeAttribute("aria-activedescendant");
    }

    function pick(area) {
      input.value = area.name;
      close();
      const error = document.getElementById(`${input.id}-error`);
      if (error) show(error, "");
      input.removeAttribute("aria-invalid");
    }

    function open() {
      options = suggestions(input.value);
      list.replaceChildren(...options.map((area, i) => {
        const li = document.createElement("li");
        li.id = `${list.id}-${i}`;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        li.textContent = area.name;
        const number = document.createElement("span");
        number.className = "number";
        number.textContent = ` ${area.number}`;
        li.append(number);
        // mousedown, not click: the input keeps its focus, so its blur does not close the list first.
        li.addEventListener("mousedown", (event) => {
          event.preventDefault();
          pick(area);
        });
        return li;
      }));
      const shown = options.length > 0;
      list.hidden = !shown;
      input.setAttribute("aria-expanded", String(shown));
      highlight(shown ? 0 : -1);
    }

    input.addEventListener("input", open);
    input.addEventListener("blur", close);
    input.addEventListener("keydown", (event) => {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        if (list.hidden) {
          open();
          return;
        }
        const step = event.key === "ArrowDown" ? 1 : -1;
        highlight((active + step + options.length) % options.length);
      } else if (event.key === "Enter" && !list.hidden && active >= 0) {
        // Picking a suggestion does not submit the form; the next Enter does.
        event.preventDefault();
        pick(options[active]);
      } else if (event.key === "Escape" && !list.hidden) {
        event.preventDefault();
        close();
      }
    });
  }

  /** The number a picker names, or null after putting an error under it. */
  function readArea(input, role) {
    const text = input.value.trim();
    if (text === "") {
      fieldError(input, `Pick where the ride ${role}: type a few letters of an area's name.`);
      return null;
    }
    const number = areaOf(text);
    if (number === null) {
      fieldError(input, `No area is called “${text}”. Type a few letters and pick one from the list.`);
      return null;
    }
    return number;
  }

  async function loadAreas() {
    try {
      const { data } = await api("GET", "/api/v1/areas");
      state.areas = data;
      state.areaByName = new Map(data.map((area) => [area.name.toLowerCase(), area.number]));
      clear($("page-error"));
    } catch (e) {
      show($("page-error"), `The list of areas could not be loaded, so rides cannot be searched or offered. ${e.message} (Reload the page to try again.)`);
    }
  }

  // --- who I am ------------------------------------------------------------------------------------------------

  const ME_KEY = "rideshare.me";

  async function loadRiders() {
    const select = $("me");
    let riders = [];
    try {
      const { status, data } = await api("GET", "/api/v1/users");
      riders = status === 204 ? [] : data;
      clear($("me-error"));
    } catch (e) {
      show($("me-error"), `The riders could not be listed. ${e.message}`);
      return;
    }
    const wanted = state.me || localStorage.getItem(ME_KEY) || "";
    const first = select.options[0];
    first.textContent = riders.length === 0 ? "— nobody has signed up yet —" : "— choose a rider —";
    select.replaceChildren(first, ...riders.map((name) => new Option(name, name)));
    setMe(riders.includes(wanted) ? wanted : "");
  }

  function setMe(name) {
    state.me = name;
    $("me").value = name;
    if (name) localStorage.setItem(ME_KEY, name);
    else localStorage.removeItem(ME_KEY);
    $("account").hidden = name === "";
    $("signup-box").open = name === "";
    $("delete-account-confirm").hidden = true;
    clear($("account-error"));
    renderRide();
  }

  async function signUp(event) {
    event.preventDefault();
    const form = $("signup");
    const username = $("signup-username");
    const password = $("signup-password");
    clearFieldErrors(form);
    clear($("signup-error"), $("signup-ok"), $("account-ok"));
    let ok = true;
    if (username.value === "") {
      fieldError(username, "Choose a username.");
      ok = false;
    }
    if (password.value === "") {
      fieldError(password, "Choose a password.");
      ok = false;
    }
    if (!ok) return;
    await busy($("signup-submit"), async () => {
      try {
        const hash = await sha1Hex(password.value);
        await api("PUT", "/api/v1/users", { username: username.value, password: hash });
      } catch (e) {
        show($("signup-error"), `Could not sign up: ${e.message}`);
        return;
      }
      const name = username.value;
      form.reset();
      state.me = name;
      await loadRiders();
      show($("signup-ok"), `Welcome, ${name}! You are now riding as ${name}.`);
    });
  }

  async function deleteAccount() {
    const name = state.me;
    await busy($("delete-account-yes"), async () => {
      try {
        await api("DELETE", `/api/v1/users/${encodeURIComponent(name)}`);
      } catch (e) {
        show($("account-error"), `Could not delete the account: ${e.message}`);
        return;
      }
      $("delete-account-confirm").hidden = true;
      state.me = "";
      await loadRiders();
      show($("account-ok"), `The account “${name}” is deleted, with the rides it offered.`);
      if (state.ride) await openRide(state.ride.rideId, { quiet: true });
    });
  }

  // --- finding rides -------------------------------------------------------------------------------------------

  async function search(event) {
    event.preventDefault();
    const form = $("search");
    clearFieldErrors(form);
    clear($("search-error"), $("results-summary"));
    $("results-list").replaceChildren();
    const source = readArea($("search-from"), "leaves from");
    const destination = readArea($("search-to"), "goes to");
    if (source === null || destination === null) return;
    await busy($("search-submit"), async () => {
      let rides;
      try {
        const { status, data } = await api("GET", `/api/v1/rides?source=${source}&destination=${destination}`);
        rides = status === 204 ? [] : data;
      } catch (e) {
        show($("search-error"), `Could not search: ${e.message}`);
        return;
      }
      const route = `from ${areaName(source)} to ${areaName(destination)}`;
      if (rides.length === 0) {
        show($("results-summary"), `No upcoming rides ${route}. You can offer one below.`);
        return;
      }
      const count = rides.length === 1 ? "1 upcoming ride" : `${rides.length} upcoming rides`;
      show($("results-summary"), `${count} ${route}:`);
      $("results-list").replaceChildren(...rides.map((ride) => {
        const li = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.className = "ride";
        button.dataset.rideId = String(ride.rideId);
        const time = document.createElement("strong");
        time.textContent = whenOf(ride.timestamp);
        const who = document.createElement("span");
        who.textContent = `offered by ${ride.username} · ride #${ride.rideId}`;
        button.append(time, who);
        button.addEventListener("click", () => openRide(ride.rideId));
        li.append(button);
        return li;
      }));
    });
  }

  // --- one ride ------------------------------------------------------------------------------------------------

  async function openRide(rideId, { quiet = false } = {}) {
    const card = $("details");
    if (!quiet) clear($("details-error"), $("details-ok"));
    $("delete-ride-confirm").hidden = true;
    let answer;
    try {
      answer = await api("GET", `/api/v1/rides/${rideId}`);
    } catch (e) {
      card.hidden = false;
      show($("details-error"), `Could not show ride #${rideId}: ${e.message}`);
      return;
    }
    if (answer.status === 204) {
      state.ride = null;
      renderRide();
      card.hidden = false;
      $("details-title").textContent = `Ride #${rideId}`;
      show($("details-error"), `Ride #${rideId} no longer exists: the rider who offered it deleted it.`);
      return;
    }
    state.ride = answer.data;
    renderRide();
    card.hidden = false;
    if (!quiet) card.focus();
  }

  function renderRide() {
    const ride = state.ride;
    const facts = $("details").querySelector(".facts");
    facts.hidden = ride === null;
    $("join").hidden = ride === null || state.me === "" || state.me === ride.created_by || ride.users.includes(state.me);
    $("delete-ride").hidden = ride === null || state.me !== ride.created_by;
    $("details-refresh").hidden = ride === null;
    if (ride === null) return;
    $("details-title").textContent = `Ride #${ride.rideId}`;
    $("details-when").textContent = whenOf(ride.timestamp);
    $("details-from").textContent = areaName(ride.source);
    $("details-to").textContent = areaName(ride.destination);
    $("details-creator").textContent = ride.created_by === state.me ? `${ride.created_by} (you)` : ride.created_by;
    const riders = ride.users.map((name) => {
      const li = document.createElement("li");
      li.textContent = name === state.me ? `${name} (you)` : name;
      return li;
    });
    if (riders.length === 0) {
      const li = document.createElement("li");
      li.className = "muted";
      li.textContent = "Nobody yet";
      riders.push(li);
    }
    $("details-riders").replaceChildren(...riders);
  }

  async function join() {
    const ride = state.ride;
    clear($("details-error"), $("details-ok"));
    await busy($("join"), async () => {
      let answer;
      try {
        answer = await api("POST", `/api/v1/rides/${ride.rideId}`, { username: state.me });
      } catch (e) {
        show($("details-error"), `Could not join ride #${ride.rideId}: ${e.message}`);
        return;
      }
      if (answer.status === 204) {
        show($("details-error"), `Could not join ride #${ride.rideId}: it no longer exists (the rider who offered it deleted it).`);
        return;
      }
      await openRide(ride.rideId, { quiet: true });
      show($("details-ok"), `You joined ride #${ride.rideId}. ${ride.created_by} will see you among its riders.`);
    });
  }

  async function deleteRide() {
    const ride = state.ride;
    await busy($("delete-ride-yes"), async () => {
      try {
        await api("DELETE", `/api/v1/rides/${ride.rideId}`);
      } catch (e) {
        show($("details-error"), `Could not delete ride #${ride.rideId}: ${e.message}`);
        return;
      }
      state.ride = null;
      renderRide();
      $("delete-ride-confirm").hidden = true;
      $("details-title").textContent = `Ride #${ride.rideId}`;
      show($("details-ok"), `Ride #${ride.rideId} is deleted.`);
      for (const button of document.querySelectorAll(`#results-list [data-ride-id="${ride.rideId}"]`)) {
        button.closest("li").remove();
      }
    });
  }

  // --- offering a ride -----------------------------------------------------------------------------------------

  function defaultDateTime() {
    // An hour from now, on the minute, in UTC: a valid ride to start from.
    const soon = new Date(Date.now() + 3600 * 1000);
    $("create-date").value = `${soon.getUTCFullYear()}-${two(soon.getUTCMonth() + 1)}-${two(soon.getUTCDate())}`;
    $("create-time").value = `${two(soon.getUTCHours())}:${two(soon.getUTCMinutes())}`;
  }

  async function create(event) {
    event.preventDefault();
    const form = $("create");
    clearFieldErrors(form);
    clear($("create-error"), $("create-ok"));
    const source = readArea($("create-from"), "leaves from");
    const destination = readArea($("create-to"), "goes to");
    const date = $("create-date");
    const time = $("create-time");
    if (date.value === "") fieldError(date, "Pick the day of the ride.");
    if (time.value === "") fieldError(time, "Pick the time of the ride.");
    if (source === null || destination === null || date.value === "" || time.value === "") return;
    if (state.me === "") {
      show($("create-error"), "Choose who you are under “You” first (or sign up): a ride is offered by a rider.");
      return;
    }
    const timestamp = toContract(date.value, time.value);
    await busy($("create-submit"), async () => {
      let answer;
      try {
        answer = await api("POST", "/api/v1/rides", {
          created_by: state.me, timestamp, source, destination,
        });
      } catch (e) {
        show($("create-error"), `Could not offer the ride: ${e.message}`);
        return;
      }
      const rideId = answer.data.rideId;
      show($("create-ok"), `Ride #${rideId} is offered: ${whenOf(timestamp)}, from ${areaName(source)} to ${areaName(destination)}.`);
      await openRide(rideId, { quiet: true });
    });
  }

  // --- wiring --------------------------------------------------------------------------------------------------

  /** `button` asks `text()` in `box` (its question paragraph) before anything is deleted; `no` withdraws. */
  function confirmStep(button, box, no, text) {
    button.addEventListener("click", () => {
      box.querySelector("p").textContent = text();
      box.hidden = false;
      box.querySelector("button.danger").focus();
    });
    no.addEventListener("click", () => {
      box.hidden = true;
      button.focus();
    });
  }

  async function start() {
    for (const field of document.querySelectorAll("[data-area-picker]")) areaPicker(field);
    $("me").addEventListener("change", (event) => {
      clear($("signup-ok"), $("account-ok"));
      setMe(event.target.value);
    });
    $("signup").addEventListener("submit", signUp);
    $("search").addEventListener("submit", search);
    $("create").addEventListener("submit", create);
    $("join").addEventListener("click", join);
    $("details-refresh").addEventListener("click", () => openRide(state.ride.rideId));
    confirmStep($("delete-account"), $("delete-account-confirm"), $("delete-account-no"),
      () => `Delete the account “${state.me}”? The rides it offered are deleted too, and it leaves the rides it joined.`);
    $("delete-account-yes").addEventListener("click", deleteAccount);
    confirmStep($("delete-ride"), $("delete-ride-confirm"), $("delete-ride-no"),
      () => `Delete ride #${state.ride.rideId}? Its riders lose their places.`);
    $("delete-ride-yes").addEventListener("click", deleteRide);
    tickClock();
    setInterval(tickClock, 15000);
    defaultDateTime();
    await Promise.all([loadAreas(), loadRiders()]);
    document.body.dataset.ready = "true";
  }

  // For the browser test and the curious: the conversions and hashes the page uses.
  window.RideShare = { sha1Hex, sha1HexPortable, toContract, fromContract };

  start();
})();
