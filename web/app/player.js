// The in-page player. Videos play through the gateway's HLS (`?stream=hls`, presigned by the
// page; the playlists inside are presigned by the gateway): "Auto" is the master playlist,
// where hls.js picks the quality the network carries; a fixed quality is that quality's media
// playlist, so a seek anywhere asks for the one segment there, produced on demand. "Original"
// is the stored file (byte ranges) where this browser can play it; audio files play that way.
// hls.js runs on Media Source Extensions; where they are missing, the browser's own HLS is
// used if it has one.

import Hls from './vendor/hls.min.mjs';

const QUALITIES = [1080, 720, 480, 360, 240];
const HLS_TYPE = 'application/vnd.apple.mpegurl';
/** How long the presigned playlist URLs live: a film with pauses (the gateway signs the
 *  segment URLs inside to expire with them). */
const PLAYLIST_EXPIRES = 6 * 3600;

/** True for audio files (played with an <audio> element, original bytes only). */
export function isAudio(item) {
  const t = item.type || '';
  return t.startsWith('audio/') || (item.media && !item.media.width && !item.media.height && !!item.media.audio_codec);
}

/** True for files the player can open. */
export function isPlayable(item) {
  const t = item.type || '';
  return t.startsWith('video/') || t.startsWith('audio/') || !!item.media;
}

/** Whether this browser can play the stored bytes as they are. */
export function originalPlayable(item) {
  const probe = document.createElement(isAudio(item) ? 'audio' : 'video');
  if (!item.type || !probe.canPlayType(item.type)) return false;
  const v = item.media?.video_codec;
  return !v || /h\.?264|avc|vp8|vp9|av1/i.test(v);
}

/** Qualities a video can be asked for: at most its own height (the gateway never upscales). */
export function qualitiesFor(item) {
  const h = item.media?.height;
  const list = QUALITIES.filter((q) => !h || q <= Math.max(h, 240));
  return list.length ? list : [240];
}

/** How this browser plays HLS: 'hls.js' (Media Source Extensions), 'native', or null. */
export function hlsSupport() {
  if (Hls.isSupported()) return 'hls.js';
  return document.createElement('video').canPlayType(HLS_TYPE) ? 'native' : null;
}

/** One opened file in the player dialog. */
export class Player {
  constructor(gateway, container, onInfo, onError) {
    this.gateway = gateway;
    this.container = container;
    this.onInfo = onInfo;
    this.onError = onError;
    this.element = null;
    this.item = null;
    this.hls = null;
    this.quality = null;
  }

  /** The options of the quality menu: [{value, label}], best first. */
  options(item) {
    const opts = [];
    if (originalPlayable(item)) opts.push({ value: 'original', label: 'Original' });
    if (!isAudio(item) && hlsSupport()) {
      opts.push({ value: 'auto', label: 'Auto' });
      for (const q of qualitiesFor(item)) {
        // Made ahead by a background job: every segment is served from its file.
        const ready = item.variants && item.variants[String(q)];
        opts.push({ value: String(q), label: ready ? `${q}p (ready)` : `${q}p` });
      }
    }
    if (opts.length === 0) opts.push({ value: 'original', label: 'Original' });
    return opts;
  }

  /** The quality a file opens at: the one chosen last in this tab, else the original if it
   *  plays here, else Auto. */
  defaultQuality(item) {
    const opts = this.options(item);
    const chosen = sessionStorage.getItem('nebula.quality');
    if (opts.some((o) => o.value === chosen)) return chosen;
    return opts.some((o) => o.value === 'auto') && opts[0].value !== 'original' ? 'auto' : opts[0].value;
  }

  open(item, quality) {
    this.close();
    this.item = item;
    const el = document.createElement(isAudio(item) ? 'audio' : 'video');
    el.controls = true;
    el.preload = 'auto';
    el.playsInline = true;
    el.id = 'player';
    el.setAttribute('aria-label', `Player: ${item.name}`);
    el.addEventListener('resize', () => this.info());
    el.addEventListener('loadedmetadata', () => this.info());
    el.addEventListener('error', () => {
      // hls.js reports its own errors (below); this is the element's, for the other paths.
      if (this.hls) return;
      const code = el.error ? el.error.code : 0;
      this.onError(code === 4 ? 'This format cannot be played here: choose Auto or a quality.' : 'Playback failed.');
    });
    this.container.replaceChildren(el);
    this.element = el;
    return this.setQuality(quality);
  }

  /** Switches quality, keeping the position. */
  async setQuality(quality) {
    const el = this.element;
    const at = el.currentTime || 0;
    const wasPlaying = !el.paused || at === 0;
    this.quality = quality;
    this.stopHls();
    const params = quality === 'original' ? {} : quality === 'auto' ? { stream: 'hls' } : { stream: 'hls', quality };
    const url = await this.gateway.presign(this.item.bucket, this.item.key, { expires: PLAYLIST_EXPIRES, params });
    if (el !== this.element || quality !== this.quality) return; // closed or switched meanwhile
    if (quality !== 'original' && hlsSupport() === 'hls.js') {
      this.playHls(url, at, wasPlaying);
    } else {
      el.src = url;
      if (at > 0) el.addEventListener('loadedmetadata', () => { el.currentTime = at; }, { once: true });
      if (wasPlaying) el.play().catch(() => {});
    }
    this.info();
  }

  playHls(url, at, play) {
    const el = this.element;
    const hls = new Hls({
      // The ES module build cannot inline its worker: it is served beside it (CSP: 'self').
      workerPath: 'vendor/hls.worker.js',
      startPosition: at > 0 ? at : -1,
      // Segments are made on demand: a cold one may take a few seconds to encode.
      fragLoadPolicy: {
        default: {
          maxTimeToFirstByteMs: 30000,
          maxLoadTimeMs: 60000,
          timeoutRetry: { maxNumRetry: 2, retryDelayMs: 0, maxRetryDelayMs: 0 },
          // 503 SlowDown (every transcode slot taken) is worth retrying.
          errorRetry: { maxNumRetry: 6, retryDelayMs: 1000, maxRetryDelayMs: 8000 },
        },
      },
    });
    this.hls = hls;
    hls.on(Hls.Events.LEVEL_SWITCHED, () => this.info());
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (data.fatal) this.onError(`Playback failed (${data.details}${data.response?.code ? `, HTTP ${data.response.code}` : ''}).`);
    });
    hls.loadSource(url);
    hls.attachMedia(el);
    if (play) hls.once(Hls.Events.MANIFEST_PARSED, () => el.play().catch(() => {}));
  }

  stopHls() {
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
  }

  /** Fullscreen for the video (also in the element's own controls). */
  fullscreen() {
    this.element?.requestFullscreen?.().catch(() => {});
  }

  info() {
    const el = this.element;
    if (!el) return;
    const parts = [];
    if (el.videoHeight) parts.push(`${el.videoWidth}×${el.videoHeight}`);
    if (this.quality === 'original') parts.push('original file');
    else if (this.quality === 'auto') parts.push(this.hls ? 'Auto (HLS, hls.js)' : 'Auto (HLS, native)');
    else parts.push(`HLS ${this.quality}p`);
    this.onInfo(parts.join(' · '));
  }

  close() {
    this.stopHls();
    if (this.element) {
      this.element.pause();
      this.element.removeAttribute('src');
      this.element.load();
      this.element.remove();
    }
    this.element = null;
  }
}
