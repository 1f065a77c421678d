// romancy_nb: the timeline of one workflow instance (anywidget ES module).
// State lives in the Python model: `instance`, `waiting`, `actions` are traitlets; the steps
// come as messages {kind: "steps", from: i, steps: rows} carrying only the rows after the
// first i (0: all of them), so a long run does not resend its history on every step. A view
// asks for all rows when it renders ({action: "snapshot"}) and again if a message does not
// follow on from the rows it has.
// Per-step buttons send {action, step_id} messages back; Python decides what they do, so
// new per-step actions need no change here: list them in `actions` and register a handler
// in Python (InstanceView.add_step_action; rewind / roll back / fork from here are such).
// A row whose `actionable` is false (a compensation, a rollback marker) gets no buttons.

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function countdown(fireAt) {
  const left = fireAt - Date.now() / 1000;
  if (left <= 0) return "due now";
  if (left < 60) return `fires in ${left.toFixed(1)} s`;
  if (left < 3600) return `fires in ${Math.floor(left / 60)} min ${Math.floor(left % 60)} s`;
  return `fires in ${(left / 3600).toFixed(1)} h`;
}

function render({ model, el: root }) {
  root.classList.add("romancy-timeline");
  let timer = null;
  let steps = [];

  function send(action, extra = {}) {
    model.send({ action, ...extra });
  }

  function draw() {
    if (timer !== null) {
      clearInterval(timer);
      timer = null;
    }
    const instance = model.get("instance") || {};
    const waiting = model.get("waiting") || {};
    const actions = model.get("actions") || [];
    root.replaceChildren();

    root.append(
      el(
        "div",
        { class: "romancy-header" },
        el("span", { class: `romancy-status romancy-${instance.status || "unknown"}` },
          instance.status || "…"),
        el("span", { class: "romancy-id" }, `${instance.workflow_name || ""} · ${instance.instance_id || ""}`),
        instance.code_version ? el("span", { class: "romancy-version" }, `code ${instance.code_version}`) : null,
      ),
    );
    if (instance.error) {
      root.append(el("div", { class: "romancy-error" }, instance.error));
    }

    const head = el("tr", {}, ...["#", "step", "status", "duration", "source", "attempts", "detail"]
      .map((name) => el("th", {}, name)));
    if (actions.length) head.append(el("th", {}, ""));
    const rows = steps.map((step) => {
      const row = el(
        "tr",
        { class: `romancy-step romancy-${step.status}`, "data-step": step.step_id },
        el("td", {}, step.seq),
        el("td", { class: "romancy-step-id" }, step.step_id),
        el("td", {}, step.status),
        el("td", { class: step.wait ? "romancy-wait" : "" }, step.duration),
        el("td", {}, step.source),
        el("td", {}, step.attempts > 1 ? `${step.attempts} (retried)` : step.attempts),
        el("td", { class: step.error ? "romancy-error" : "romancy-detail" }, step.error || step.output || ""),
      );
      if (actions.length) {
        const buttons = step.actionable === false ? [] : actions.map((action) =>
          el("button", { class: "romancy-step-action", onclick: () => send(action.name, { step_id: step.step_id }) },
            action.label));
        row.append(el("td", { class: "romancy-step-actions" }, ...buttons));
      }
      return row;
    });
    root.append(el("table", { class: "romancy-steps" }, el("thead", {}, head), el("tbody", {}, ...rows)));
    if (!steps.length) root.append(el("div", { class: "romancy-empty" }, "no steps recorded yet"));

    if (waiting.timer) {
      // The countdown ticks here, in the browser; "fire now" is a Python button beside it.
      const label = el("span", { class: "romancy-countdown" }, countdown(waiting.timer.fire_at));
      timer = setInterval(() => { label.textContent = countdown(waiting.timer.fire_at); }, 250);
      root.append(el("div", { class: "romancy-waiting" },
        el("span", {}, `⏱ ${waiting.timer.step_id}: `), label));
    }
    if (waiting.event) {
      root.append(el("div", { class: "romancy-waiting" },
        `✉ waiting for event "${waiting.event.type}" (${waiting.event.step_id})`));
    }
  }

  function received(message) {
    if (!message || message.kind !== "steps") return;
    if (message.from === 0) steps = message.steps;
    else if (message.from === steps.length) steps = steps.concat(message.steps);
    else { send("snapshot"); return; }  // rows went missing in between: ask for all of them
    draw();
  }

  model.on("msg:custom", received);
  model.on("change:instance", draw);
  model.on("change:waiting", draw);
  model.on("change:actions", draw);
  draw();
  send("snapshot");
  return () => {
    model.off("msg:custom", received);
    if (timer !== null) clearInterval(timer);
  };
}

export default { render };
