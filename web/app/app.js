// The Nebula web app: sign-in, buckets and folders, uploads, player, share links, jobs, status.
// Plain ES modules, no framework: the DOM is built with createElement/textContent only (never
// innerHTML with data), which with the gateway's CSP leaves no way to inject script.

import { Gateway, GatewayError } from './s3.js';
import { UploadQueue, droppedFiles } from './upload.js';
import { Player, isPlayable, isAudio, qualitiesFor } from './player.js';

const SESSION = 'nebula.session';
const $ = (id) => document.getElementById(id);

const state = {
  gateway: null,
  region: 'us-east-1',
  bucket: null,
  prefix: '',
  folders: [],
  files: [],
  sort: 'name',
  descending: false,
  filter: '',
  selected: new Set(),
  uploads: null,
  player: null,
  timers: {},
};

// -- small helpers -----------------------------------------------------------------------------

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const kid of kids.flat()) if (kid != null) e.append(kid);
  return e;
}

/** A decorative icon from icons/ (the control around it carries the label). */
function icon(name) {
  return el('img', { src: `icons/${name}.svg`, alt: '', class: 'icon', width: '20', height: '20' });
}

export function formatSize(n) {
  if (n == null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function formatDuration(s) {
  if (s == null || !isFinite(s)) return '';
  s = Math.round(s);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

function formatDate(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

const TYPES = {
  mp4: 'video/mp4', m4v: 'video/mp4', mov: 'video/quicktime', mkv: 'video/x-matroska', webm: 'video/webm',
  avi: 'video/x-msvideo', ts: 'video/mp2t', mp3: 'audio/mpeg', m4a: 'audio/mp4', aac: 'audio/aac',
  flac: 'audio/flac', ogg: 'audio/ogg', opus: 'audio/ogg', wav: 'audio/wav', jpg: 'image/jpeg',
  jpeg: 'image/jpeg', png: 'image/png', gif: 'image/gif', webp: 'image/webp', pdf: 'application/pdf',
  txt: 'text/plain', json: 'application/json', zip: 'application/zip',
};

function guessType(name) {
  const ext = name.includes('.') ? name.split('.').pop().toLowerCase() : '';
  return TYPES[ext] || '';
}

function baseName(path) {
  const trimmed = path.endsWith('/') ? path.slice(0, -1) : path;
  return trimmed.slice(trimmed.lastIndexOf('/') + 1);
}

function showError(node, err) {
  node.textContent = err ? (err.message || String(err)) : '';
  node.hidden = !err;
}

// -- sign-in -----------------------------------------------------------------------------------

function saveSession(s) {
  // sessionStorage: this tab only, gone when it closes; never localStorage, a URL or a log.
  sessionStorage.setItem(SESSION, JSON.stringify(s));
}

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION) || 'null');
  } catch {
    return null;
  }
}

async function signIn(event) {
  event.preventDefault();
  const creds = {
    accessKey: $('access-key').value.trim(),
    secretKey: $('secret-key').value,
    region: $('region').value.trim() || state.region,
  };
  const button = $('signin-button');
  button.disabled = true;
  showError($('signin-error'), null);
  try {
    const gw = new Gateway(creds);
    await gw.listBuckets(); // proves the keys
    saveSession(creds);
    $('secret-key').value = '';
    start(gw);
  } catch (e) {
    showError($('signin-error'), e instanceof GatewayError ? e : new Error(`Sign-in failed: ${e.message}`));
  } finally {
    button.disabled = false;
  }
}

function signOut() {
  sessionStorage.clear();
  for (const u of state.uploads?.items || []) u.cancel();
  stopTimers();
  state.gateway = null;
  state.uploads = null;
  $('app').hidden = true;
  $('signin').hidden = false;
  $('uploads-list').replaceChildren();
  $('uploads').hidden = true;
  location.hash = '';
  $('access-key').focus();
}

function stopTimers() {
  for (const t of Object.values(state.timers)) clearInterval(t);
  state.timers = {};
}

function start(gw) {
  state.gateway = gw;
  state.uploads = new UploadQueue(gw, onUploadChange);
  state.player = new Player(gw, $('player-media'), (t) => { $('player-info').textContent = t; },
    (m) => showError($('player-error'), new Error(m)));
  $('signin').hidden = true;
  $('app').hidden = false;
  route();
}

// -- navigation --------------------------------------------------------------------------------

function folderHash(bucket, prefix = '') {
  return `#/b/${encodeURIComponent(bucket)}/${prefix.split('/').map(encodeURIComponent).join('/')}`;
}

function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  if (!h.startsWith('b/')) return { bucket: null, prefix: '' };
  const rest = h.slice(2);
  const i = rest.indexOf('/');
  const bucket = decodeURIComponent(i < 0 ? rest : rest.slice(0, i));
  const prefix = i < 0 ? '' : rest.slice(i + 1).split('/').map(decodeURIComponent).join('/');
  return { bucket, prefix };
}

async function route() {
  if (!state.gateway) return;
  const { bucket, prefix } = parseHash();
  state.bucket = bucket;
  state.prefix = prefix;
  state.selected.clear();
  renderBreadcrumb();
  renderToolbar();
  showError($('list-error'), null);
  $('list-status').textContent = 'Loading…';
  try {
    if (!bucket) await loadBuckets();
    else await loadFolder();
  } catch (e) {
    if (e.code === 'InvalidAccessKeyId' || e.code === 'SignatureDoesNotMatch') {
      signOut();
      showError($('signin-error'), e);
      return;
    }
    showError($('list-error'), e);
    $('list-status').textContent = '';
  }
}

function renderBreadcrumb() {
  const nav = $('breadcrumb');
  const items = [el('a', { href: '#/', text: 'Buckets' })];
  if (state.bucket) {
    items.push(el('a', { href: folderHash(state.bucket), text: state.bucket }));
    let acc = '';
    for (const seg of state.prefix.split('/').filter(Boolean)) {
      acc += `${seg}/`;
      items.push(el('a', { href: folderHash(state.bucket, acc), text: seg }));
    }
  }
  items[items.length - 1].setAttribute('aria-current', 'page');
  const out = [];
  items.forEach((a, i) => {
    if (i) out.push(el('span', { class: 'sep', 'aria-hidden': 'true', text: '/' }));
    out.push(a);
  });
  nav.replaceChildren(...out);
}

function renderToolbar() {
  const inBucket = !!state.bucket;
  $('new-bucket-button').hidden = inBucket;
  $('upload-files-label').hidden = !inBucket;
  $('upload-folder-label').hidden = !inBucket;
  $('delete-selected-button').hidden = !inBucket;
  $('delete-selected-button').disabled = state.selected.size === 0;
  $('drop-hint').hidden = !inBucket;
}

// -- buckets -----------------------------------------------------------------------------------

async function loadBuckets() {
  const buckets = await state.gateway.listBuckets();
  state.folders = [];
  state.files = buckets.map((b) => ({ name: b.name, bucketRow: true, modified: b.created }));
  render();
}

async function createBucket(event) {
  event.preventDefault();
  const name = $('bucket-name').value.trim();
  showError($('bucket-error'), null);
  if (!$('bucket-name').checkValidity()) {
    showError($('bucket-error'), new Error('Use 3–63 characters: lower-case letters, digits, dots and hyphens.'));
    return;
  }
  try {
    await state.gateway.createBucket(name);
    $('bucket-dialog').close();
    location.hash = folderHash(name);
  } catch (e) {
    showError($('bucket-error'), e);
  }
}

// -- folders -----------------------------------------------------------------------------------

async function loadFolder() {
  const { bucket, prefix } = state;
  const [listing, catalog] = await Promise.all([
    state.gateway.listFolder(bucket, prefix),
    state.gateway.catalog(bucket, prefix).catch(() => new Map()),
  ]);
  if (bucket !== state.bucket || prefix !== state.prefix) return; // navigated away meanwhile
  state.folders = listing.folders;
  state.files = listing.files.map((f) => {
    const c = catalog.get(f.key);
    const name = f.key.slice(prefix.length);
    return {
      ...f,
      bucket,
      name,
      type: c?.content_type || guessType(name),
      media: c?.media || null,
      variants: c?.variants || {},
      poster: c?.poster || null,
    };
  });
  render();
  loadPosters();
}

function sortedFiles() {
  const f = state.filter.toLowerCase();
  const files = state.files.filter((x) => !f || x.name.toLowerCase().includes(f));
  const folders = state.folders.filter((p) => !f || baseName(p).toLowerCase().includes(f));
  const key = {
    name: (x) => x.name.toLowerCase(),
    size: (x) => x.size ?? 0,
    type: (x) => x.type || '',
    date: (x) => x.modified || '',
  }[state.sort];
  files.sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    const c = ka < kb ? -1 : ka > kb ? 1 : a.name.localeCompare(b.name);
    return state.descending ? -c : c;
  });
  folders.sort((a, b) => (state.descending ? -1 : 1) * a.localeCompare(b));
  return { folders, files };
}

const CODECS = { h264: 'H.264', avc: 'H.264', h265: 'HEVC', hevc: 'HEVC', aac: 'AAC', mp3: 'MP3', opus: 'Opus', vorbis: 'Vorbis', vp8: 'VP8', vp9: 'VP9', av1: 'AV1', flac: 'FLAC' };

function codecName(c) {
  const short = c.replace(/\s*\(.*\)$/, '');
  return CODECS[short.toLowerCase()] || short;
}

function mediaSummary(m) {
  if (!m) return '';
  const parts = [];
  if (m.duration_secs) parts.push(formatDuration(m.duration_secs));
  if (m.width && m.height) parts.push(`${m.width}×${m.height}`);
  const codecs = [m.video_codec, m.audio_codec].filter(Boolean).map(codecName);
  if (codecs.length) parts.push(codecs.join(' / '));
  return parts.join(' · ');
}

function render() {
  const head = $('listing-head');
  const body = $('listing-body');
  if (!state.bucket) {
    head.replaceChildren(el('th', { scope: 'col', text: 'Bucket' }), el('th', { scope: 'col', class: 'col-date', text: 'Created' }));
    const rows = sortedFiles().files.map((b) => el('tr', { dataset: { bucket: b.name } },
      el('td', {}, el('a', { href: folderHash(b.name), class: 'name' }, icon('bucket'), b.name)),
      el('td', { class: 'col-date', text: formatDate(b.modified) })));
    body.replaceChildren(...rows);
    $('list-status').textContent = rows.length ? `${rows.length} bucket${rows.length === 1 ? '' : 's'}` : 'No buckets yet: create one.';
    return;
  }
  const { folders, files } = sortedFiles();
  const all = el('input', {
    type: 'checkbox', id: 'select-all', 'aria-label': 'Select all files',
    onchange: (e) => {
      for (const f of files) e.target.checked ? state.selected.add(f.key) : state.selected.delete(f.key);
      render();
    },
  });
  all.checked = files.length > 0 && files.every((f) => state.selected.has(f.key));
  head.replaceChildren(
    el('th', { scope: 'col', class: 'col-check' }, all),
    el('th', { scope: 'col', class: 'col-poster' }, el('span', { class: 'visually-hidden', text: 'Poster' })),
    el('th', { scope: 'col', text: 'Name' }),
    el('th', { scope: 'col', class: 'col-size', text: 'Size' }),
    el('th', { scope: 'col', class: 'col-type', text: 'Type' }),
    el('th', { scope: 'col', class: 'col-media', text: 'Media' }),
    el('th', { scope: 'col', class: 'col-date', text: 'Modified' }),
    el('th', { scope: 'col', class: 'col-actions' }, el('span', { class: 'visually-hidden', text: 'Actions' })),
  );
  const rows = [];
  for (const p of folders) {
    rows.push(el('tr', { class: 'folder', dataset: { prefix: p } },
      el('td', { class: 'col-check' }),
      el('td', { class: 'col-poster' }, icon('folder')),
      el('td', {}, el('a', { href: folderHash(state.bucket, p), class: 'name', text: `${baseName(p)}/` })),
      el('td', { class: 'col-size' }), el('td', { class: 'col-type', text: 'folder' }),
      el('td', { class: 'col-media' }), el('td', { class: 'col-date' }), el('td', { class: 'col-actions' })));
  }
  for (const f of files) {
    const check = el('input', {
      type: 'checkbox', 'aria-label': `Select ${f.name}`,
      onchange: (e) => {
        e.target.checked ? state.selected.add(f.key) : state.selected.delete(f.key);
        renderToolbar();
      },
    });
    check.checked = state.selected.has(f.key);
    const playable = isPlayable(f);
    const nameCell = playable
      ? el('button', { type: 'button', class: 'name link', onclick: () => openPlayer(f), 'aria-label': `Play ${f.name}` }, f.name)
      : el('span', { class: 'name', text: f.name });
    const poster = el('td', { class: 'col-poster' });
    const fallback = () => icon(isAudio(f) ? 'audio' : playable ? 'video' : 'file');
    if (f.posterUrl) {
      // A video whose picture cannot be decoded gets no poster (415/500): show the icon and
      // do not ask again on the next render.
      const onerror = (e) => {
        f.posterUrl = null;
        f.poster = null;
        e.target.replaceWith(fallback());
      };
      poster.append(el('img', { src: f.posterUrl, alt: '', class: 'poster', loading: 'lazy', onerror }));
    } else poster.append(fallback());
    rows.push(el('tr', { dataset: { key: f.key } },
      el('td', { class: 'col-check' }, check),
      poster,
      el('td', { class: 'col-name' }, nameCell, el('span', { class: 'meta-inline small muted', text: [formatSize(f.size), mediaSummary(f.media)].filter(Boolean).join(' · ') })),
      el('td', { class: 'col-size', text: formatSize(f.size) }),
      el('td', { class: 'col-type', text: f.type || '' }),
      el('td', { class: 'col-media media-info', text: mediaSummary(f.media) }),
      el('td', { class: 'col-date', text: formatDate(f.modified) }),
      el('td', { class: 'col-actions' },
        playable ? el('button', { type: 'button', class: 'play', onclick: () => openPlayer(f), 'aria-label': `Play ${f.name}`, title: 'Play' }, icon('play')) : null,
        el('button', { type: 'button', class: 'download', onclick: () => download(f), 'aria-label': `Download ${f.name}`, title: 'Download' }, icon('download')),
        el('button', { type: 'button', class: 'share', onclick: () => openShare(f), 'aria-label': `Share ${f.name}`, title: 'Share link' }, icon('share')),
        el('button', { type: 'button', class: 'delete', onclick: () => confirmDelete([f.key]), 'aria-label': `Delete ${f.name}`, title: 'Delete' }, icon('delete')))));
  }
  body.replaceChildren(...rows);
  // For the benchmark: when the first folder listing was drawn after navigation start.
  if (!performance.getEntriesByName('nebula:listing').length) performance.mark('nebula:listing');
  const n = folders.length + files.length;
  $('list-status').textContent = n ? `${folders.length} folder${folders.length === 1 ? '' : 's'}, ${files.length} file${files.length === 1 ? '' : 's'}` : 'This folder is empty: drop files here or use Upload.';
  renderToolbar();
}

/** Posters (`?thumbnail=160`, the default moment) for videos the catalog lists a `poster` for. */
async function loadPosters() {
  let changed = false;
  for (const f of state.files) {
    if (!f.poster || f.posterUrl) continue;
    f.posterUrl = await state.gateway.presign(f.bucket, f.key, { expires: 3600, params: { thumbnail: '160' } });
    changed = true;
  }
  if (changed) render();
}

// -- download, delete, share -------------------------------------------------------------------

async function download(f) {
  const url = await state.gateway.presign(f.bucket, f.key, { expires: 600 });
  // Same origin, so `download` names the file instead of opening it.
  const a = el('a', { href: url, download: f.name, class: 'visually-hidden' });
  document.body.append(a);
  a.click();
  a.remove();
}

function confirmDelete(keys) {
  const dlg = $('confirm-dialog');
  $('confirm-title').textContent = keys.length === 1 ? 'Delete this file?' : `Delete ${keys.length} files?`;
  $('confirm-text').textContent = keys.length === 1 ? baseName(keys[0]) : keys.map(baseName).slice(0, 10).join(', ') + (keys.length > 10 ? ', …' : '');
  dlg.returnValue = '';
  dlg.onclose = async () => {
    if (dlg.returnValue !== 'yes') return;
    try {
      const failed = [];
      for (let i = 0; i < keys.length; i += 1000) failed.push(...await state.gateway.deleteObjects(state.bucket, keys.slice(i, i + 1000)));
      if (failed.length) throw new Error(`Could not delete ${failed.map((f) => `${f.key} (${f.message})`).join(', ')}`);
      for (const k of keys) state.selected.delete(k);
      await route();
    } catch (e) {
      showError($('list-error'), e);
    }
  };
  dlg.showModal();
}

let shareItem = null;

function openShare(f) {
  shareItem = f;
  $('share-name').textContent = f.name;
  const video = isPlayable(f) && !isAudio(f);
  const q = $('share-quality');
  q.replaceChildren(el('option', { value: 'original', text: 'Original file' }),
    ...(video ? qualitiesFor(f).map((x) => el('option', { value: String(x), text: `${x}p (transcoded)` })) : []));
  q.hidden = !video;
  $('share-quality-label').hidden = !video;
  $('share-status').textContent = '';
  $('share-dialog').showModal();
  updateShareUrl();
}

async function updateShareUrl() {
  if (!shareItem) return;
  const quality = $('share-quality').value;
  const params = quality && quality !== 'original' ? { quality } : {};
  const expires = Number($('share-expiry').value);
  $('share-url').value = await state.gateway.presign(shareItem.bucket, shareItem.key, { expires, params });
  const until = new Date(Date.now() + expires * 1000);
  $('share-status').textContent = `Valid until ${until.toLocaleString()}.`;
}

async function copyShare() {
  const input = $('share-url');
  input.select();
  try {
    await navigator.clipboard.writeText(input.value);
    $('share-status').textContent = 'Copied.';
  } catch {
    // No clipboard API outside secure contexts: the text is selected for the person to copy.
    $('share-status').textContent = 'Selected: copy it with Ctrl+C (⌘C).';
  }
}

// -- player and background transcodes ----------------------------------------------------------

let playing = null;

async function openPlayer(f) {
  playing = f;
  const p = state.player;
  $('player-title').textContent = f.name;
  showError($('player-error'), null);
  const select = $('player-quality');
  select.replaceChildren(...p.options(f).map((o) => el('option', { value: o.value, text: o.label })));
  select.value = p.defaultQuality(f);
  const tq = $('transcode-qualities');
  tq.replaceChildren(...(isAudio(f) ? [] : qualitiesFor(f).map((q) => el('label', { class: 'check' },
    el('input', { type: 'checkbox', name: 'quality', value: String(q) }), `${q}p`))));
  $('transcode-form').hidden = isAudio(f);
  $('player-fullscreen').hidden = isAudio(f);
  $('transcode-status').textContent = '';
  $('player-dialog').showModal();
  await p.open(f, select.value);
}

async function queueTranscode(event) {
  event.preventDefault();
  const qualities = [...$('transcode-qualities').querySelectorAll('input:checked')].map((i) => Number(i.value));
  if (!qualities.length) {
    $('transcode-status').textContent = 'Choose at least one quality.';
    return;
  }
  try {
    const res = await state.gateway.api('POST', 'transcode', { bucket: playing.bucket, key: playing.key, qualities });
    $('transcode-status').textContent = `Queued ${res.jobs.length} job${res.jobs.length === 1 ? '' : 's'}: see Jobs.`;
  } catch (e) {
    $('transcode-status').textContent = e.message;
  }
}

// -- jobs and status panels --------------------------------------------------------------------

function togglePanel(button, panel, refresh, every) {
  const open = panel.hidden;
  panel.hidden = !open;
  button.setAttribute('aria-expanded', String(open));
  clearInterval(state.timers[panel.id]);
  delete state.timers[panel.id];
  if (open) {
    refresh();
    state.timers[panel.id] = setInterval(() => {
      if (!document.hidden) refresh();
    }, every);
  }
}

async function refreshJobs() {
  try {
    const { jobs } = await state.gateway.api('GET', 'jobs?limit=20');
    $('jobs-empty').hidden = jobs.length > 0;
    $('jobs-list').replaceChildren(...jobs.map((j) => {
      const active = j.status === 'pending' || j.status === 'processing';
      return el('li', { dataset: { job: String(j.id), status: j.status } },
        el('div', { class: 'job-line' },
          el('span', { class: 'job-name', text: `${j.bucket}/${j.key}` }),
          el('span', { class: `badge ${j.status}`, text: `${j.quality}p ${j.status}` })),
        el('progress', { max: '100', value: String(j.progress), 'aria-label': `Progress of ${j.key} at ${j.quality}p` }),
        j.error ? el('p', { class: 'error small', text: j.error }) : null,
        active ? el('button', {
          type: 'button', class: 'small-button', 'aria-label': `Cancel ${j.quality}p of ${j.key}`, text: 'Cancel',
          onclick: async () => {
            await state.gateway.api('POST', `jobs/${j.id}/cancel`).catch(() => {});
            refreshJobs();
          },
        }) : null);
    }));
  } catch (e) {
    $('jobs-empty').hidden = false;
    $('jobs-empty').textContent = e.message;
  }
}

async function refreshStatus() {
  try {
    const h = await state.gateway.api('GET', 'health');
    const rows = [
      ['Status', h.status],
      ['Version', `${h.version}, up ${formatDuration(h.uptime_secs)}`],
      ['CPU', `load ${h.cpu.load1.toFixed(2)} on ${h.cpu.cores} cores`],
      ['Memory', `${formatSize(h.memory.available_bytes)} free of ${formatSize(h.memory.total_bytes)}; gateway ${formatSize(h.memory.gateway_rss_bytes)}`],
    ];
    const disk = (label, d) => rows.push([label, `${formatSize(d.available_bytes)} free of ${formatSize(d.total_bytes)}`
      + (d.min_free_bytes ? `, ${formatSize(d.min_free_bytes)} kept free` : '')
      + (d.writes_refused ? '; FULL: uploads are refused until files are deleted' : '')]);
    if (h.disk) disk('Disk', h.disk);
    for (const d of h.bucket_disks || []) disk(`Disk of ${d.buckets.join(', ')}`, d);
    for (const b of h.battery || []) rows.push([`Battery ${b.name}`, `${b.capacity_percent ?? '?'} % ${b.status || ''}`]);
    rows.push(['Encoder', h.media.enabled ? `${h.media.encoder} (up to ${h.media.max_transcodes} live)` : 'none']);
    rows.push(['Database', h.database.ok ? h.database.engine || 'ok' : `down: ${h.database.error || ''}`]);
    if (h.jobs) rows.push(['Jobs', `${h.jobs.processing} running, ${h.jobs.pending} waiting, ${h.jobs.completed} done, ${h.jobs.failed} failed`]);
    $('status-list').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { text: k }), el('dd', { text: v })]));
    $('status-updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('status-list').replaceChildren(el('dt', { text: 'Error' }), el('dd', { text: e.message }));
  }
}

// -- uploads -----------------------------------------------------------------------------------

const uploadRows = new Map();

function enqueue(list) {
  if (!state.bucket || !list.length) return;
  const bucket = state.bucket;
  const entries = list.map(({ file, path }) => ({ file, bucket, key: state.prefix + path }));
  $('uploads').hidden = false;
  state.uploads.add(entries);
}

function onUploadChange(item) {
  let row = uploadRows.get(item);
  if (!row) {
    const bar = el('progress', { max: String(item.size || 1), value: '0', 'aria-label': `Upload of ${item.key}` });
    const label = el('span', { class: 'small upload-state' });
    const cancel = el('button', { type: 'button', class: 'small-button', 'aria-label': `Cancel upload of ${item.key}`, text: 'Cancel', onclick: () => item.cancel() });
    row = { li: el('li', { dataset: { upload: item.key } }, el('span', { class: 'upload-name', text: item.key }), bar, label, cancel), bar, label, cancel };
    uploadRows.set(item, row);
    $('uploads-list').append(row.li);
  }
  row.bar.value = item.state === 'done' ? item.size || 1 : item.loaded;
  row.li.dataset.state = item.state;
  const pct = item.size ? Math.floor((100 * row.bar.value) / item.size) : 100;
  row.label.textContent = {
    queued: 'waiting',
    uploading: `${pct} % of ${formatSize(item.size)}${item.parts ? ` (${item.parts} parts)` : ''}${item.retries ? `, ${item.retries} retried` : ''}`,
    done: `done, ${formatSize(item.size)}`,
    failed: `failed: ${item.error}`,
    cancelled: 'cancelled',
  }[item.state];
  row.cancel.hidden = item.state !== 'queued' && item.state !== 'uploading';
  const t = state.uploads.totals();
  $('uploads-total').max = t.size || 1;
  $('uploads-total').value = t.loaded;
  $('uploads-summary').textContent = `${t.counts.done} of ${state.uploads.items.length} done, ${formatSize(t.loaded)} of ${formatSize(t.size)}`;
  if (item.state === 'done' && item.bucket === state.bucket) scheduleRefresh();
}

let refreshTimer = null;
function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    if (state.bucket) route();
  }, 400);
}

function clearUploads() {
  state.uploads.clearFinished();
  for (const [item, row] of uploadRows) {
    if (!state.uploads.items.includes(item)) {
      row.li.remove();
      uploadRows.delete(item);
    }
  }
  if (!state.uploads.items.length) $('uploads').hidden = true;
}

function setUpDrop() {
  const zone = $('main');
  zone.addEventListener('dragover', (e) => {
    if (!state.bucket) return;
    e.preventDefault();
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', async (e) => {
    zone.classList.remove('dragging');
    if (!state.bucket) return;
    e.preventDefault();
    enqueue(await droppedFiles(e.dataTransfer));
  });
}

// -- start -------------------------------------------------------------------------------------

async function boot() {
  try {
    const cfg = await (await fetch('config.json')).json();
    state.region = cfg.region || state.region;
  } catch { /* keep the default */ }
  $('region').value = state.region;

  $('signin-form').addEventListener('submit', signIn);
  $('signout-button').addEventListener('click', signOut);
  $('new-bucket-button').addEventListener('click', () => {
    $('bucket-name').value = '';
    showError($('bucket-error'), null);
    $('bucket-dialog').showModal();
  });
  $('bucket-create').addEventListener('click', createBucket);
  $('filter').addEventListener('input', (e) => {
    state.filter = e.target.value;
    render();
  });
  $('sort').addEventListener('change', (e) => {
    state.sort = e.target.value;
    render();
  });
  $('sort-direction').addEventListener('click', (e) => {
    state.descending = !state.descending;
    e.target.textContent = state.descending ? '↓' : '↑';
    e.target.setAttribute('aria-label', state.descending ? 'Sort ascending' : 'Sort descending');
    render();
  });
  $('delete-selected-button').addEventListener('click', () => confirmDelete([...state.selected]));
  for (const id of ['upload-files', 'upload-folder']) {
    $(id).addEventListener('change', (e) => {
      enqueue([...e.target.files].map((f) => ({ file: f, path: f.webkitRelativePath || f.name })));
      e.target.value = '';
    });
  }
  $('uploads-clear').addEventListener('click', clearUploads);
  $('player-quality').addEventListener('change', (e) => {
    showError($('player-error'), null);
    // Remembered for this tab: the next video opens at the quality chosen last.
    sessionStorage.setItem('nebula.quality', e.target.value);
    state.player.setQuality(e.target.value);
  });
  $('player-fullscreen').addEventListener('click', () => state.player.fullscreen());
  $('player-close').addEventListener('click', () => $('player-dialog').close());
  $('player-dialog').addEventListener('close', () => state.player.close());
  $('transcode-form').addEventListener('submit', queueTranscode);
  $('share-expiry').addEventListener('change', updateShareUrl);
  $('share-quality').addEventListener('change', updateShareUrl);
  $('share-copy').addEventListener('click', copyShare);
  $('jobs-button').addEventListener('click', (e) => togglePanel(e.currentTarget, $('jobs-panel'), refreshJobs, 2000));
  $('status-button').addEventListener('click', (e) => togglePanel(e.currentTarget, $('status-panel'), refreshStatus, 3000));
  window.addEventListener('hashchange', route);
  setUpDrop();

  if (!window.crypto?.subtle) {
    showError($('signin-error'), new Error('This browser cannot sign requests on this page: WebCrypto needs a secure context. Open the gateway over https (--tls-cert) or as http://localhost.'));
    $('signin-button').disabled = true;
  }
  const saved = loadSession();
  if (saved && window.crypto?.subtle) {
    start(new Gateway(saved));
  } else {
    $('signin').hidden = false;
    $('access-key').focus();
  }
}

boot();
