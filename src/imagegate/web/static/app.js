// imagegate web gallery: progressive bits only. Every page works without this file;
// it adds infinite scroll, auto-applied filters, the model picker and generate progress.
"use strict";

function onReady(fn) {
  if (document.readyState !== "loading") fn();
  else document.addEventListener("DOMContentLoaded", fn);
}

// Filters: send the browser's time zone (dates are days as the user sees them) and
// apply a select as soon as it changes.
function setUpFilters() {
  const form = document.querySelector("form[data-autosubmit]");
  if (!form) return;
  const tz = form.querySelector("[data-tz]");
  if (tz) tz.value = String(-new Date().getTimezoneOffset());
  form.querySelectorAll("select, input[type=date]").forEach((el) => {
    el.addEventListener("change", () => form.requestSubmit());
  });
}

// Infinite scroll: when the "Load more" link comes into view, fetch the next page of
// cards (server-rendered, already escaped) and put them in its place.
function setUpInfiniteScroll() {
  const grid = document.getElementById("grid");
  if (!grid || !("IntersectionObserver" in window)) return;
  let loading = false;
  const observer = new IntersectionObserver(async (entries) => {
    const entry = entries.find((e) => e.isIntersecting);
    if (!entry || loading) return;
    const link = entry.target;
    loading = true;
    link.textContent = "Loading…";
    try {
      const res = await fetch(link.dataset.src, { credentials: "same-origin" });
      if (!res.ok) throw new Error(String(res.status));
      const template = document.createElement("template");
      template.innerHTML = await res.text();
      observer.unobserve(link);
      link.replaceWith(template.content);
      watch();
    } catch (err) {
      link.textContent = "Load more";  // the plain link still works
    } finally {
      loading = false;
    }
  }, { rootMargin: "600px" });
  function watch() {
    const more = grid.querySelector("[data-more]");
    if (more) observer.observe(more);
  }
  watch();
}

// Generate: show only the chosen model's parameters (disabled fields are not sent),
// then submit in the background with a progress bar and go to the result.
function setUpGenerate() {
  const form = document.querySelector("form[data-generate]");
  if (!form) return;
  const picker = form.querySelector("[data-model-picker]");
  const n = form.querySelector("input[name=n]");
  const errorBox = form.querySelector("[data-error]");
  const progress = form.querySelector("[data-progress]");
  const progressText = form.querySelector("[data-progress-text]");
  const submit = form.querySelector("[data-submit]");

  function showModel() {
    form.querySelectorAll("fieldset[data-model]").forEach((fs) => {
      const active = fs.dataset.model === picker.value;
      fs.hidden = !active;
      fs.disabled = !active;
    });
    const option = picker.selectedOptions[0];
    if (option && n) n.max = option.dataset.maxN;
  }
  picker.addEventListener("change", showModel);
  showModel();

  function fail(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    progress.hidden = true;
    submit.disabled = false;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    submit.disabled = true;
    progress.hidden = false;
    const started = performance.now();
    const count = Number(n && n.value) || 1;
    const tick = setInterval(() => {
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      progressText.textContent = `Generating ${count} image${count === 1 ? "" : "s"}… ${seconds} s`;
    }, 100);
    const option = picker.selectedOptions[0];
    const streams = option && option.dataset.stream === "1" && count === 1 && window.ReadableStream;
    try {
      if (streams) {
        await generateStreaming(form, progressText, fail);
        return;
      }
      const res = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      let body = {};
      try { body = await res.json(); } catch (e) { /* not JSON: handled below */ }
      if (res.ok && body.url) {
        progressText.textContent = "Done. Opening the result…";
        window.location.assign(body.url);
        return;
      }
      if (res.status === 401 || res.status === 403) {
        fail(body.error || "Your session has expired: reload the page and sign in again.");
      } else {
        fail(body.error || `The server answered ${res.status}.`);
      }
    } catch (err) {
      fail("Could not reach the server. Check the connection and try again.");
    } finally {
      clearInterval(tick);
    }
  });
}

// A model that streams: its partial images appear as they arrive (server-sent events
// over fetch), then the result's page opens.
async function generateStreaming(form, progressText, fail) {
  const previews = form.querySelector("[data-previews]");
  previews.replaceChildren();
  const res = await fetch(form.action, {
    method: "POST",
    body: new FormData(form),
    credentials: "same-origin",
    headers: { Accept: "text/event-stream" },
  });
  if (!res.ok || !(res.headers.get("content-type") || "").startsWith("text/event-stream")) {
    let body = {};
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    fail(body.error || `The server answered ${res.status}.`);
    return;
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const name = (block.match(/^event: (.*)$/m) || [])[1];
      const data = JSON.parse((block.match(/^data: (.*)$/m) || [, "{}"])[1]);
      if (name === "partial" && data.src.startsWith("data:image/")) {
        const img = document.createElement("img");
        img.src = data.src;
        img.alt = `Partial image ${data.index + 1}`;
        previews.append(img);
        previews.hidden = false;
        progressText.textContent = `Partial image ${data.index + 1} received…`;
      } else if (name === "done") {
        progressText.textContent = "Done. Opening the result…";
        window.location.assign(data.url);
        return;
      } else if (name === "error") {
        fail(data.error);
        return;
      }
    }
  }
  fail("The stream ended early: the generation may still be recorded in the gallery.");
}

// Times: show them in the reader's own time zone.
function localTimes() {
  document.querySelectorAll("time.local[datetime]").forEach((el) => {
    const when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) el.textContent = when.toLocaleString();
  });
}

// Running generations: how long they have been running, counted up each second.
function runningTimes() {
  const format = (seconds) => {
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return `${h} h ${m} min`;
    return m ? `${m} min ${s} s` : `${s} s`;
  };
  const update = () => {
    document.querySelectorAll(".elapsed[data-since]").forEach((el) => {
      const since = Date.parse(el.dataset.since);
      if (!isNaN(since)) el.textContent = format(Math.max(0, Math.floor((Date.now() - since) / 1000)));
    });
  };
  setInterval(update, 1000);
}

onReady(() => {
  setUpFilters();
  setUpInfiniteScroll();
  setUpGenerate();
  localTimes();
  runningTimes();
});
