// melanoscan API page: render /openapi.json as a list of endpoints, with no outside asset.
"use strict";

// "#/components/schemas/X" -> the schema X of the document.
function resolve(spec, schema) {
  if (schema && schema.$ref) return spec.components.schemas[schema.$ref.split("/").pop()];
  return schema || {};
}

function typeOf(spec, schema) {
  schema = schema || {};
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.anyOf) return schema.anyOf.map((s) => typeOf(spec, s)).join(" | ");
  if (schema.type === "array") return `${typeOf(spec, schema.items)}[]`;
  return schema.format === "binary" ? "file" : schema.type || "any";
}

function table(headings, rows) {
  return el("table", { class: "api-table" },
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", { text: h })))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((c) => el("td", { text: c }))))));
}

function operation(spec, path, method, op) {
  const section = el("section", { class: "api-operation" },
    el("h2", {}, el("code", { text: `${method.toUpperCase()} ${path}` })),
    el("p", { text: op.summary || "" }));
  if (op.description) section.append(el("pre", { class: "api-description", text: op.description }));
  const params = (op.parameters || []).map((p) => [p.name, p.in, typeOf(spec, p.schema),
    p.schema && p.schema.default !== undefined ? String(p.schema.default) : "",
    p.description || ""]);
  if (params.length) {
    section.append(el("h3", { text: "Parameters" }),
      table(["name", "in", "type", "default", "description"], params));
  }
  const body = op.requestBody && op.requestBody.content;
  if (body) {
    for (const [type, content] of Object.entries(body)) {
      const schema = resolve(spec, content.schema);
      const fields = Object.entries(schema.properties || {}).map(([name, s]) =>
        [name, typeOf(spec, s), (schema.required || []).includes(name) ? "yes" : "no",
         s.description || ""]);
      section.append(el("h3", { text: `Body (${type})` }),
        table(["field", "type", "required", "description"], fields));
    }
  }
  const responses = Object.entries(op.responses || {}).map(([status, r]) => {
    const content = r.content && r.content["application/json"];
    return [status, r.description || "", content ? typeOf(spec, content.schema) : ""];
  });
  section.append(el("h3", { text: "Responses" }),
    table(["status", "meaning", "body"], responses));
  return section;
}

async function render() {
  const main = document.getElementById("api");
  try {
    const response = await fetch("/openapi.json");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const spec = await response.json();
    main.replaceChildren(el("p", { text: `${spec.info.title} ${spec.info.version}. ` +
      `${spec.info.description || ""}` }));
    for (const [path, methods] of Object.entries(spec.paths)) {
      for (const [method, op] of Object.entries(methods)) main.append(operation(spec, path, method, op));
    }
    const schemas = spec.components ? spec.components.schemas : {};
    if (schemas.ErrorBody) {
      main.append(el("p", { text: 'Every error answer is {"error": {"code", "message", ' +
        '"filename"}}, with a 4xx or 5xx status.' }));
    }
  } catch (error) {
    main.textContent = `Could not load /openapi.json: ${error.message}`;
  }
}

render();
