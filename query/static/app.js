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

let current = null; // what the grid shows: {kind: "photo", file} or {kind: "similar", id}
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

function showPreview(src, caption) {
  if (previewUrl && previewUrl !== src) {
    URL.revokeObjectURL(previewUrl);
    previewUrl = null;
  }
  if (!src) {
    els.preview.hidden = true;
    els.previewImg.removeAttribute("src");
    return;
  }
  els.previewImg.src = src;
  els.previewImg.alt = caption;
  els.previewCaption.textContent = caption;
  els.preview.hidden = false;
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
      const body = await searchByPhoto(query.file, f, controller.signal, pageUrl);
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
  seenCurrencies = new Set();
  const url = URL.createObjectURL(file);
  showPreview(url, "Your photo");
  previewUrl = url;
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  run({ kind: "photo", file });
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
  window.addEventListener("popstate", () => {
    if (location.hash) openFromHash();
    else if (lastPhoto) searchPhoto(lastPhoto);
  });
  // The cut-off first, so the first results already have their divider.
  Promise.all([loadConfig(), loadCategories()]).finally(() => {
    openFromHash();
    document.documentElement.classList.add("ready");
  });
}

start();
