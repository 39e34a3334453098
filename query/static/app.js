// The search page: pick, drop, paste or photograph an image; then browse listings like it.

import {
  ApiError,
  getCategories,
  getConfig,
  getListing,
  searchByPhoto,
  similarListings,
} from "./api.js";

const $ = (id) => document.getElementById(id);

const els = {
  dropZone: $("drop-zone"),
  choose: $("choose"),
  take: $("take"),
  file: $("file"),
  camera: $("camera"),
  preview: $("preview"),
  previewImg: $("preview-img"),
  previewCaption: $("preview-caption"),
  previewFrame: $("preview-frame"),
  cropBox: $("crop-box"),
  wholePhoto: $("whole-photo"),
  filters: $("filters"),
  category: $("category"),
  currency: $("currency"),
  moreResults: $("more-results"),
  priceMin: $("price-min"),
  priceMax: $("price-max"),
  spinner: $("spinner"),
  statusText: $("status-text"),
  error: $("error"),
  heading: $("results-heading"),
  note: $("results-note"),
  grid: $("grid"),
  template: $("card-template"),
};

// Friendly words for the API's error codes, then for its statuses; the API's message otherwise.
const BY_CODE = {
  not_an_image: "That file is not an image. Please choose a photo (JPEG, PNG, WebP or GIF).",
  unsupported_format: "That image format is not supported. Please use JPEG, PNG, WebP or GIF.",
  unsupported_media_type: "That file is not an image. Please choose a photo.",
  image_too_large: "That photo is too large. Please choose a smaller one.",
  body_too_large: "That photo is too large. Please choose a smaller one.",
  too_many_pixels: "That photo has too many pixels. Please choose a smaller one.",
  truncated_image: "That image looks damaged or incomplete. Please try another photo.",
  listing_not_found: "That listing is no longer available.",
  currency_required: "Choose a currency for the price range.",
  crop_too_small: "That box is too small for this photo. Drag a larger one.",
  network: "The search service could not be reached. Check your connection and try again.",
};
const BY_STATUS = {
  413: BY_CODE.image_too_large,
  415: BY_CODE.not_an_image,
  422: BY_CODE.truncated_image,
  503: "The search service is not ready yet. Please try again in a moment.",
};

function friendlyMessage(error) {
  if (error instanceof ApiError) {
    return BY_CODE[error.code] || BY_STATUS[error.status] || `Search failed: ${error.message}.`;
  }
  return "Something went wrong. Please try again.";
}

let current = null; // what the grid shows: {kind: "photo", file, crop} or {kind: "similar", id}
let inFlight = null; // AbortController of the request under way
let previewUrl = null;
let lastPhoto = null; // the shopper's photo, searched again when Back leaves "more like this"
let threshold = null; // the calibrated cut-off (/v1/config): a "less similar" line below it
let shown = []; // the listings on the grid, every page so far
let nextPage = null; // the URL of the page after them, when there is one
// Currencies of the listings shown for this photo or listing, under any filters: narrowing to
// one currency must not take the others off the picker.
let seenCurrencies = new Set();

function filters() {
  const number = (input) => (input.value.trim() === "" ? null : Number(input.value));
  const priceMin = number(els.priceMin);
  const priceMax = number(els.priceMax);
  // A price range is meant in one currency: the one chosen, else the commonest on show.
  if ((priceMin !== null || priceMax !== null) && !els.currency.value) {
    const common = commonestCurrency();
    if (common) setCurrencies([common], common);
  }
  return {
    category: els.category.value || null,
    currency: els.currency.value || null,
    priceMin,
    priceMax,
  };
}

function commonestCurrency() {
  const counts = new Map();
  for (const listing of shown) {
    const c = listing.price && listing.price.currency;
    if (c) counts.set(c, (counts.get(c) || 0) + 1);
  }
  let best = null;
  for (const [c, n] of counts) if (best === null || n > counts.get(best)) best = c;
  return best;
}

/** The currency picker offers the currencies of the listings shown, and keeps a choice. */
function setCurrencies(codes, chosen = els.currency.value) {
  const all = [...new Set([...codes, ...(chosen ? [chosen] : [])])].sort();
  const options = [new Option("Any", "")].concat(all.map((c) => new Option(c, c)));
  els.currency.replaceChildren(...options);
  els.currency.value = chosen || "";
}

function showCurrencies() {
  for (const l of shown) if (l.price && l.price.currency) seenCurrencies.add(l.price.currency);
  setCurrencies([...seenCurrencies]);
}

/** The category picker: the index's tree, indented, with how many listings each holds. */
async function loadCategories() {
  try {
    const body = await getCategories();
    const options = [new Option("All categories", "")];
    const add = (nodes, depth) => {
      for (const node of nodes) {
        const label = `${"\u2003".repeat(depth)}${node.name.replaceAll("_", " ")} (${node.count})`;
        options.push(new Option(label, node.path));
        add(node.children, depth + 1);
      }
    };
    add(body.categories, 0);
    const chosen = els.category.value;
    els.category.replaceChildren(...options);
    els.category.value = chosen;
  } catch {
    // Without the tree the picker offers "All categories" only; searching still works.
  }
}

async function loadConfig() {
  try {
    threshold = (await getConfig()).relevance_threshold;
  } catch {
    threshold = null; // no divider: results are shown as ranked
  }
}

function checkFilters(f) {
  for (const [input, value] of [[els.priceMin, f.priceMin], [els.priceMax, f.priceMax]]) {
    // A number field holding something that is not a number reads as empty: badInput tells.
    if (input.validity.badInput || (value !== null && !(Number.isFinite(value) && value >= 0))) {
      input.focus();
      return "Prices must be numbers, 0 or more.";
    }
  }
  if (f.priceMin !== null && f.priceMax !== null && f.priceMin > f.priceMax) {
    els.priceMin.focus();
    return "The minimum price is above the maximum price.";
  }
  return null;
}

function setBusy(text) {
  els.spinner.hidden = text === null;
  els.grid.setAttribute("aria-busy", text === null ? "false" : "true");
  if (text !== null) els.statusText.textContent = text;
}

function showError(message) {
  // The alert region stays in the page, empty when all is well, so that new text is announced.
  els.error.textContent = message || "";
}

/** The preview; a box can be drawn on it when it is the shopper's own photo (`croppable`). */
function showPreview(src, caption, croppable = false) {
  if (previewUrl && previewUrl !== src) {
    URL.revokeObjectURL(previewUrl);
    previewUrl = null;
  }
  els.previewFrame.classList.toggle("croppable", Boolean(src) && croppable);
  showBox(null);
  if (!src) {
    els.preview.hidden = true;
    els.previewImg.removeAttribute("src");
    els.previewCaption.textContent = "";
    return;
  }
  els.previewImg.src = src;
  els.previewImg.alt = caption;
  els.previewCaption.textContent = caption;
  els.preview.hidden = false;
}

// The smallest box searched, as a share of each side of the photo (the API's own minimum).
const MIN_CROP = 0.05;
const CROP_HASH = /^#crop=([0-9.]+),([0-9.]+),([0-9.]+),([0-9.]+)$/;

/** The box drawn over the preview, in fractions of the photo; null: none. */
function showBox(box) {
  els.cropBox.hidden = box === null;
  els.wholePhoto.hidden = !(box && current && current.kind === "photo" && current.crop);
  if (box === null) return;
  Object.assign(els.cropBox.style, {
    left: `${box.x * 100}%`,
    top: `${box.y * 100}%`,
    width: `${box.w * 100}%`,
    height: `${box.h * 100}%`,
  });
}

/** A box as the API takes it: in ten-thousandths, wholly inside the photo, whatever rounding. */
function roundedBox(box) {
  const x = Math.floor(box.x * 1e4);
  const y = Math.floor(box.y * 1e4);
  const w = Math.min(Math.round(box.w * 1e4), 1e4 - x);
  const h = Math.min(Math.round(box.h * 1e4), 1e4 - y);
  return { x: x / 1e4, y: y / 1e4, w: w / 1e4, h: h / 1e4 };
}

function cropHash(box) {
  return box ? `#crop=${box.x},${box.y},${box.w},${box.h}` : "";
}

function cropFromHash() {
  const match = CROP_HASH.exec(location.hash);
  if (!match) return null;
  const [x, y, w, h] = match.slice(1).map(Number);
  const ok = [x, y, w, h].every(Number.isFinite) && w >= MIN_CROP && h >= MIN_CROP;
  return ok && x + w <= 1 && y + h <= 1 ? { x, y, w, h } : null;
}

function formatPrice(price) {
  if (!price || price.amount === null || price.amount === undefined) return "Price not given";
  const amount = Number(price.amount);
  if (!Number.isFinite(amount)) return `${price.amount} ${price.currency || ""}`.trim();
  if (price.currency) {
    try {
      return new Intl.NumberFormat(undefined, { style: "currency", currency: price.currency })
        .format(amount);
    } catch {
      // Not an ISO 4217 code: show it as it came.
    }
  }
  return `${price.amount} ${price.currency || ""}`.trim();
}

function card(listing) {
  const node = els.template.content.firstElementChild.cloneNode(true);
  const title = listing.title || listing.id;
  node.dataset.listingId = listing.id;
  node.dataset.score = String(listing.score);
  const img = node.querySelector("img");
  img.alt = title;
  if (listing.image_url) {
    img.src = listing.image_url;
    img.addEventListener("error", () => node.querySelector(".thumb").classList.add("missing"), {
      once: true,
    });
  } else {
    node.querySelector(".thumb").classList.add("missing");
  }
  node.querySelector(".title").textContent = title;
  node.querySelector(".price").textContent = formatPrice(listing.price);
  node.querySelector(".shop").textContent = listing.shop_id ? `Shop ${listing.shop_id}` : "";
  const others = Number(listing.duplicates) || 0;
  if (others > 0) {
    // The other listings of its duplicate group: the same photos, from other shops.
    const also = node.querySelector(".also");
    also.textContent = `Also sold by ${others} other shop${others === 1 ? "" : "s"}`;
    also.hidden = false;
  }
  const score = node.querySelector(".score");
  score.textContent = `Similarity ${Number(listing.score).toFixed(2)}`;
  score.title =
    "Cosine similarity of the photos, from -1 to 1: 1 is the same picture" +
    (threshold === null ? "" : `; from ${threshold} on, usually the same product`);
  const more = node.querySelector(".more");
  more.setAttribute("aria-label", `More like this: ${title}`);
  more.addEventListener("click", () => showSimilar(listing));
  return node;
}

function divider() {
  const li = document.createElement("li");
  li.className = "divider";
  li.setAttribute("role", "separator");
  li.textContent = "Less similar";
  return li;
}

/** Cards for `listings`, with the "less similar" line before the first below the cut-off. */
function cards(listings, before) {
  const nodes = [];
  let previous = before;
  for (const listing of listings) {
    const above = (s) => threshold === null || s === null || s >= threshold;
    if (!above(listing.score) && above(previous)) nodes.push(divider());
    nodes.push(card(listing));
    previous = listing.score;
  }
  return nodes;
}

function render(body, heading, append = false) {
  els.heading.textContent = heading;
  const before = append && shown.length ? shown[shown.length - 1].score : null;
  if (append) {
    els.grid.append(...cards(body.listings, before));
    shown = shown.concat(body.listings);
  } else {
    els.grid.replaceChildren(...cards(body.listings, null));
    shown = body.listings.slice();
  }
  nextPage = body.next || null;
  els.moreResults.hidden = nextPage === null;
  showCurrencies();
  const n = shown.length;
  els.note.textContent = n === 0 ? "No listings match. Try other filters or another photo." : "";
  els.note.hidden = n !== 0;
  els.statusText.textContent =
    n === 0 ? "No listings found." : `${n} listing${n === 1 ? "" : "s"} found.`;
}

async function run(query, pageUrl = null) {
  const f = filters();
  const problem = pageUrl ? null : checkFilters(f);
  if (problem) {
    showError(problem);
    return;
  }
  inFlight?.abort();
  const controller = new AbortController();
  inFlight = controller;
  current = query;
  showError(null);
  setBusy(
    query.kind === "photo" ? "Searching for listings like your photo…" : "Finding similar listings…",
  );
  try {
    const append = pageUrl !== null;
    if (query.kind === "photo") {
      const crop = query.crop;
      const body = await searchByPhoto(query.file, { ...f, crop }, controller.signal, pageUrl);
      render(body, "Results", append);
    } else {
      const body = await similarListings(query.id, f, controller.signal, pageUrl);
      render(body, `More like “${query.title}”`, append);
      if (!append) els.heading.focus();
    }
  } catch (err) {
    if (err.name === "AbortError") return;
    showError(friendlyMessage(err));
    els.statusText.textContent = "";
    // Results of an earlier search would read as answers to this one.
    els.heading.textContent = "Results";
    els.grid.replaceChildren();
    shown = [];
    nextPage = null;
    els.moreResults.hidden = true;
    els.note.hidden = true;
    const refused = err instanceof ApiError && [413, 415, 422].includes(err.status);
    if (query.kind === "photo" && refused) {
      // The photo itself was refused: it is not worth showing or searching again.
      showPreview(null);
      current = null;
      lastPhoto = null;
    }
  } finally {
    if (inFlight === controller) {
      inFlight = null;
      setBusy(null);
      // A count of answered requests: scripts driving the page (its tests) wait on it.
      const root = document.documentElement;
      root.dataset.answered = String(Number(root.dataset.answered || 0) + 1);
    }
  }
}

function searchPhoto(file) {
  if (!file) return;
  lastPhoto = file;
  // A new photo: a box drawn on the one before means nothing on it.
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  searchLastPhoto(null);
}

/** The shopper's photo searched again, whole or in the region `crop`. */
function searchLastPhoto(crop) {
  seenCurrencies = new Set();
  const src = current && current.kind === "photo" && current.file === lastPhoto ? previewUrl : null;
  const url = src || URL.createObjectURL(lastPhoto);
  showPreview(url, "Your photo", true);
  previewUrl = url;
  const query = { kind: "photo", file: lastPhoto, crop };
  current = query;
  showBox(crop);
  run(query);
}

/** The box as drawn: searched, and kept in the link so that Back returns to the one before. */
function searchRegion(box) {
  const crop = box ? roundedBox(box) : null;
  const hash = cropHash(crop);
  if (location.hash !== hash) history.pushState(null, "", hash || location.pathname + location.search);
  searchLastPhoto(crop);
}

function wireCrop() {
  const area = els.previewFrame;
  let drag = null; // {id, x, y}: the pointer drawing and where it went down
  const at = (e) => {
    const r = els.previewImg.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return { x: clamp((e.clientX - r.left) / r.width), y: clamp((e.clientY - r.top) / r.height) };
  };
  const boxTo = (p) => ({
    x: Math.min(drag.x, p.x),
    y: Math.min(drag.y, p.y),
    w: Math.abs(p.x - drag.x),
    h: Math.abs(p.y - drag.y),
  });
  const drawnNow = () => (current && current.kind === "photo" ? current.crop : null);
  // Pointer events: a mouse, a pen and a finger draw the same way.
  area.addEventListener("pointerdown", (e) => {
    if (!area.classList.contains("croppable") || !e.isPrimary || e.button !== 0) return;
    e.preventDefault();
    area.setPointerCapture(e.pointerId);
    drag = { id: e.pointerId, ...at(e) };
    showBox({ ...drag, w: 0, h: 0 });
  });
  area.addEventListener("pointermove", (e) => {
    if (drag && e.pointerId === drag.id) showBox(boxTo(at(e)));
  });
  area.addEventListener("pointerup", (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    const box = boxTo(at(e));
    drag = null;
    // A click or a sliver is no region: the box searched before stays.
    if (box.w < MIN_CROP || box.h < MIN_CROP) showBox(drawnNow());
    else searchRegion(box);
  });
  area.addEventListener("pointercancel", (e) => {
    if (!drag || e.pointerId !== drag.id) return;
    drag = null;
    showBox(drawnNow());
  });
  els.wholePhoto.addEventListener("click", () => {
    if (lastPhoto) searchRegion(null);
  });
}

function showSimilar(listing) {
  seenCurrencies = new Set();
  showPreview(listing.image_url, `Like: ${listing.title || listing.id}`);
  // The hash makes the view a link (and the Back button work); hashchange does nothing new for it.
  const hash = `#like=${encodeURIComponent(listing.id)}`;
  if (location.hash !== hash) history.pushState(null, "", hash);
  run({ kind: "similar", id: listing.id, title: listing.title || listing.id });
}

async function openFromHash() {
  const match = /^#like=(.+)$/.exec(location.hash);
  if (!match) return;
  const id = decodeURIComponent(match[1]);
  try {
    const listing = await getListing(id);
    showPreview(listing.image_urls[0] || null, `Like: ${listing.title || id}`);
    run({ kind: "similar", id, title: listing.title || id });
  } catch (err) {
    showError(friendlyMessage(err));
  }
}

function firstFile(list) {
  return list && list.length ? list[0] : null;
}

function wireInputs() {
  els.choose.addEventListener("click", () => els.file.click());
  els.take.addEventListener("click", () => els.camera.click());
  for (const input of [els.file, els.camera]) {
    input.addEventListener("change", () => {
      const file = firstFile(input.files);
      // Cleared, so that choosing the same photo again is a change too.
      input.value = "";
      searchPhoto(file);
    });
  }
}

function wireDrop() {
  const zone = els.dropZone;
  const over = (on) => zone.classList.toggle("over", on);
  zone.addEventListener("dragenter", (e) => {
    e.preventDefault();
    over(true);
  });
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    over(true);
  });
  zone.addEventListener("dragleave", (e) => {
    if (!zone.contains(e.relatedTarget)) over(false);
  });
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    over(false);
    const file = firstFile(e.dataTransfer.files);
    if (file) searchPhoto(file);
    else showError("Drop a photo file from your device.");
  });
  // A photo dropped just beside the zone must not make the browser leave the page to show it.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (e) => {
      if (!zone.contains(e.target)) e.preventDefault();
    });
  }
}

function wirePaste() {
  document.addEventListener("paste", (e) => {
    const files = e.clipboardData ? Array.from(e.clipboardData.files) : [];
    const file = files.find((f) => f.type.startsWith("image/")) || null;
    if (!file) return; // Text pasted into the filters stays text.
    e.preventDefault();
    searchPhoto(file);
  });
}

function wireFilters() {
  els.filters.addEventListener("submit", (e) => {
    e.preventDefault();
    if (current) run(current);
    else showError(checkFilters(filters()));
  });
  els.filters.addEventListener("reset", () => {
    // The form clears its fields after this event; search again once it has.
    setTimeout(() => current && run(current), 0);
  });
  els.category.addEventListener("change", () => current && run(current));
  els.moreResults.addEventListener("click", () => {
    if (current && nextPage) run(current, nextPage);
  });
}

function start() {
  showError(null);
  wireInputs();
  wireDrop();
  wirePaste();
  wireFilters();
  wireCrop();
  window.addEventListener("popstate", () => {
    if (/^#like=/.test(location.hash)) openFromHash();
    else if (lastPhoto) searchLastPhoto(cropFromHash());
  });
  // The cut-off first, so the first results already have their divider.
  Promise.all([loadConfig(), loadCategories()]).finally(() => {
    openFromHash();
    document.documentElement.classList.add("ready");
  });
}

start();
