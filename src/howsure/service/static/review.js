// Keyboard for the review page: 1-9 pick a label, Enter submits, s skips.
// Without JavaScript the page still works: radio buttons and two submit buttons.
(function () {
  "use strict";
  var form = document.getElementById("review-form");
  if (!form) { return; }
  var radios = Array.prototype.slice.call(form.querySelectorAll("input[name=label]"));
  var submit = document.getElementById("submit");
  var skip = document.getElementById("skip");
  var sent = false;

  function send(button) {
    if (sent) { return; }  // one answer per page: a held-down key must not post twice
    sent = true;
    form.requestSubmit(button);
  }

  function pick(radio) {
    radio.checked = true;
    radios.forEach(function (r) { r.parentNode.classList.toggle("picked", r === radio); });
  }

  radios.forEach(function (radio) {
    radio.addEventListener("change", function () { pick(radio); });
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    if (target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && target.type === "text"))) { return; }
    if (/^[1-9]$/.test(event.key)) {
      var radio = radios[Number(event.key) - 1];
      if (radio) { pick(radio); event.preventDefault(); }
    } else if (event.key === "Enter") {
      event.preventDefault();
      if (radios.some(function (r) { return r.checked; })) {
        send(submit);
      } else {
        form.classList.add("needs-label");
      }
    } else if (event.key === "s" || event.key === "S") {
      event.preventDefault();
      send(skip);
    }
  });

  form.addEventListener("submit", function (event) {
    var action = event.submitter ? event.submitter.value : "review";
    if (action === "review" && !radios.some(function (r) { return r.checked; })) {
      event.preventDefault();
      sent = false;
      form.classList.add("needs-label");
    }
  });
})();
