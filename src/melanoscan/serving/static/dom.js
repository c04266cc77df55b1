// Shared by the page (app.js) and the API page (api.js): build DOM nodes without innerHTML.
"use strict";

// el("p", {class: "x", text: "hi"}, child...): an element with attributes, text and children.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}
