// Building and updating the page's elements.

/** Build an element: h("td", {class: "x", text: "y"}, child...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
/** The same for SVG: s("line", {x1: 0, ...}). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined) continue;
    if (k === "text") el.textContent = v;
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

/** A table with a caption for screen readers, its column heads and tbody,
 * in a box that scrolls sideways on a narrow screen. */
export function gridTable(id, caption, columns, tbody) {
  return h("div", { class: "scroll" },
    h("table", { id, class: "grid", "data-testid": id },
      h("caption", { class: "sr-only", text: caption }),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", text: c })))),
      tbody));
}

/** Change only what changed: no flicker, no lost selection. */
export function setText(el, text) {
  text = String(text);
  if (el.textContent !== text) el.textContent = text;
}
export function setAttr(el, name, value) {
  value = String(value);
  if (el.getAttribute(name) !== value) el.setAttribute(name, value);
}

/** Keep a tbody's rows in `keys` order, creating and updating rows by key. */
export function syncRows(tbody, keys, create, update) {
  const have = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
  let prev = null;
  for (const key of keys) {
    let tr = have.get(key);
    if (!tr) { tr = create(key); tr.dataset.key = key; }
    have.delete(key);
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== tr) tbody.insertBefore(tr, want);
    update(tr, key);
    prev = tr;
  }
  for (const tr of have.values()) tr.remove();
}
