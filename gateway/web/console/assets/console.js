// The little the console does with JavaScript on; every page works without it.
'use strict';

// Live parts: an element with an id, data-live="EVENT..." (and hx-get, hx-trigger="live") is
// fetched again when one of those gateway events arrives, at most once per data-live-delay ms
// (default 500) however busy the gateway is; the last event of a burst always gets its refresh.
function startLive() {
  const liveParts = () => [...document.querySelectorAll('[data-live]')];
  if (liveParts().length === 0 || !('EventSource' in window)) return;
  const source = new EventSource('/api/v1/events');
  const timers = new Map();
  const due = (el, delay) => {
    if (timers.has(el.id)) return;
    const wait = delay ?? Number(el.dataset.liveDelay ?? 500);
    timers.set(
      el.id,
      setTimeout(() => {
        timers.delete(el.id);
        // The part may have been swapped since: the one in the page now is refreshed.
        const now = document.getElementById(el.id);
        if (now) htmx.trigger(now, 'live');
      }, wait),
    );
  };
  const types = new Set(liveParts().flatMap((el) => el.dataset.live.split(' ')));
  for (const type of types) {
    source.addEventListener(type, () => {
      for (const el of liveParts()) if (el.dataset.live.split(' ').includes(type)) due(el);
    });
  }
  const status = document.getElementById('live-status');
  source.addEventListener('open', () => {
    if (status) status.textContent = 'Live: updated as mail arrives.';
    // What happened between the page's rendering (or a lost connection) and now was sent to
    // nobody: fetch the live parts once to catch up.
    for (const el of liveParts()) due(el, 0);
  });
  source.addEventListener('error', () => {
    if (status) status.textContent = 'Not live: reconnecting to the gateway…';
  });
  // Leaving the page ends the stream here rather than as an interrupted request.
  window.addEventListener('pagehide', () => source.close());
}

// Forms that change something for good ask first.
document.addEventListener('submit', (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});

// Times in the reader's own time zone (the page says UTC without JavaScript).
function localTimes(root) {
  for (const t of root.querySelectorAll('time[datetime]')) {
    const date = new Date(t.dateTime);
    if (!Number.isNaN(date.getTime())) {
      t.title = t.dateTime;
      t.textContent = date.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
    }
  }
}

document.addEventListener('DOMContentLoaded', () => {
  localTimes(document);
  htmx.onLoad(localTimes);
  // A session that ended (idle too long, signed out elsewhere): to the sign-in form, then back here.
  document.body.addEventListener('htmx:responseError', (event) => {
    if (event.detail.xhr.status === 401) window.location.assign(`/sign-in?next=${encodeURIComponent(window.location.pathname + window.location.search)}`);
  });
  startLive();
});
