// The in-page player: fixed qualities are presigned `?quality=` URLs (the gateway transcodes,
// or serves a finished rendition with byte ranges); "Original" is the stored file where this
// browser can play it.

const QUALITIES = [1080, 720, 480, 360, 240];

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

/** One opened file in the player dialog. */
export class Player {
  constructor(gateway, container, onInfo, onError) {
    this.gateway = gateway;
    this.container = container;
    this.onInfo = onInfo;
    this.onError = onError;
    this.element = null;
    this.item = null;
  }

  /** The options of the quality menu: [{value, label}], best first. */
  options(item) {
    const opts = [];
    if (originalPlayable(item)) opts.push({ value: 'original', label: 'Original' });
    if (!isAudio(item)) {
      for (const q of qualitiesFor(item)) {
        // A finished rendition is a file with byte ranges: seekable anywhere at once.
        const ready = item.variants && item.variants[String(q)];
        opts.push({ value: String(q), label: ready ? `${q}p (ready)` : `${q}p` });
      }
    }
    if (opts.length === 0) opts.push({ value: 'original', label: 'Original' });
    return opts;
  }

  /** The quality a file opens at: the one chosen last in this tab, else the original if it
   *  plays here, else 720p or less. */
  defaultQuality(item) {
    const opts = this.options(item);
    const chosen = sessionStorage.getItem('nebula.quality');
    if (opts.some((o) => o.value === chosen)) return chosen;
    if (opts[0].value === 'original') return 'original';
    return (opts.find((o) => Number(o.value) <= 720) || opts[opts.length - 1]).value;
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
    el.addEventListener('seeking', () => {
      // A live transcode arrives as it is made: only what has arrived can be played, and a
      // seek past it starts over. Say so instead of jumping back silently.
      const s = el.seekable;
      const reachable = s.length && el.currentTime <= s.end(s.length - 1) + 0.5;
      if (this.quality !== 'original' && !reachable && el.currentTime > 0) {
        this.onError('This quality is still being made while it plays, so it cannot jump ahead yet: '
          + 'choose Original, or prepare the quality in the background below (it is seekable when ready).');
      }
    });
    el.addEventListener('error', () => {
      const code = el.error ? el.error.code : 0;
      this.onError(code === 4 ? 'This format cannot be played here: choose a quality the gateway transcodes.' : 'Playback failed.');
    });
    this.container.replaceChildren(el);
    this.element = el;
    return this.setQuality(quality);
  }

  /** Switches quality, keeping the position where the new stream allows it. */
  async setQuality(quality) {
    const el = this.element;
    const at = el.currentTime || 0;
    const wasPlaying = !el.paused || at === 0;
    this.quality = quality;
    const params = quality === 'original' ? {} : { quality };
    const url = await this.gateway.presign(this.item.bucket, this.item.key, { expires: 6 * 3600, params });
    el.src = url;
    if (at > 0) {
      el.addEventListener('loadedmetadata', () => {
        el.currentTime = at;
      }, { once: true });
    }
    if (wasPlaying) el.play().catch(() => {});
  }

  info() {
    const el = this.element;
    if (!el) return;
    const parts = [];
    if (el.videoHeight) parts.push(`${el.videoWidth}×${el.videoHeight}`);
    parts.push(this.quality === 'original' ? 'original file' : `transcoded to ${this.quality}p`);
    this.onInfo(parts.join(' · '));
  }

  close() {
    if (this.element) {
      this.element.pause();
      this.element.removeAttribute('src');
      this.element.load();
      this.element.remove();
    }
    this.element = null;
  }
}
