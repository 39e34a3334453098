// A small client for the public search API (/v1/...): everything the page knows about the service.

/** An answer other than success: the HTTP status (0 when the service could not be reached),
 *  the API's machine-readable code and its human message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** Query-string parameters of /v1/search and /v1/listings/{id}/similar; `crop` ({x, y, w, h},
 *  fractions of the photo) is for a search only. */
export function searchParams({ k, category, currency, priceMin, priceMax, minScore, crop } = {}) {
  const params = new URLSearchParams();
  if (k) params.set("k", String(k));
  if (category) params.set("category", category);
  if (currency) params.set("currency", currency);
  if (priceMin !== undefined && priceMin !== null) params.set("price_min", String(priceMin));
  if (priceMax !== undefined && priceMax !== null) params.set("price_max", String(priceMax));
  if (minScore !== undefined && minScore !== null) params.set("min_score", String(minScore));
  if (crop) params.set("crop", [crop.x, crop.y, crop.w, crop.h].join(","));
  const text = params.toString();
  return text ? `?${text}` : "";
}

async function call(url, init) {
  let response;
  try {
    response = await fetch(url, { ...init, headers: { Accept: "application/json" } });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "the search service could not be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON: a proxy's error page, or a connection cut short.
  }
  if (!response.ok) {
    const error = body && body.error ? body.error : {};
    throw new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || response.statusText || "request failed",
    );
  }
  if (body === null) throw new ApiError(response.status, "bad_response", "the answer was not JSON");
  return body;
}

/** POST /v1/search with the photo as multipart field `image`; filters, and the region to search
 *  (`filters.crop`), go in the query string.
 *  Resolves to {listings: [{id, title, category, price: {amount, currency}, shop_id,
 *  image_url, score, duplicates}], offset, next, took_ms, model_id}; `duplicates` is how many
 *  other listings share the result's duplicate group (null with collapse=none). `next`, when given, is the URL of the
 *  following page: pass it as `pageUrl` with the same photo. */
export function searchByPhoto(file, filters, signal, pageUrl) {
  const form = new FormData();
  form.append("image", file, file.name || "photo");
  const url = pageUrl || `/v1/search${searchParams(filters)}`;
  return call(url, { method: "POST", body: form, signal });
}

/** GET /v1/listings/{id}/similar: more like this, never including the listing itself; with
 *  `pageUrl` (an answer's `next`), the following page. */
export function similarListings(listingId, filters, signal, pageUrl) {
  const id = encodeURIComponent(listingId);
  return call(pageUrl || `/v1/listings/${id}/similar${searchParams(filters)}`, { signal });
}

/** GET /v1/listings/{id}: one listing as indexed. */
export function getListing(listingId, signal) {
  return call(`/v1/listings/${encodeURIComponent(listingId)}`, { signal });
}

/** GET /v1/config: {relevance_threshold, default_k, max_k, max_offset}. */
export function getConfig(signal) {
  return call("/v1/config", { signal });
}

/** GET /v1/categories: {categories: [{path, name, count, children: [...]}], total}. */
export function getCategories(signal) {
  return call("/v1/categories", { signal });
}
