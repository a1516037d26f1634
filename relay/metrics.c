/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus text exposition (format 0.0.4) and the plain counter blocks both roles keep. */
#include "ccrelay/metrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const method_names[CR_METRICS_NMETHODS] = {"GET",   "HEAD",    "POST", "PUT",
                                                              "DELETE", "PATCH", "OPTIONS", "other"};
static const char *const class_names[CR_METRICS_NCLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

const double cr_metrics_latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,  0.5,    1,     2.5,  5,     10,   30, 60};
const size_t cr_metrics_latency_nbounds = sizeof cr_metrics_latency_bounds / sizeof cr_metrics_latency_bounds[0];
const double cr_metrics_rtt_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
const size_t cr_metrics_rtt_nbounds = sizeof cr_metrics_rtt_bounds / sizeof cr_metrics_rtt_bounds[0];

cr_metrics_method_t cr_metrics_method(const char *method) {
  if (method == NULL)
    return CR_METRICS_OTHER;
  for (int i = 0; i < CR_METRICS_OTHER; i++)
    if (strcmp(method, method_names[i]) == 0)
      return (cr_metrics_method_t)i;
  return CR_METRICS_OTHER;
}

const char *cr_metrics_method_name(cr_metrics_method_t m) {
  return (unsigned)m < CR_METRICS_NMETHODS ? method_names[m] : "other";
}

unsigned cr_metrics_status_class(int status) {
  if (status < 100 || status > 599)
    return 4;
  return (unsigned)(status / 100 - 1);
}

const char *cr_metrics_class_name(unsigned cls) { return cls < CR_METRICS_NCLASSES ? class_names[cls] : "5xx"; }

void cr_metrics_hist_init(cr_metrics_hist_t *h, const double *bounds, size_t nbounds) {
  memset(h, 0, sizeof *h);
  h->bounds = bounds;
  h->nbounds = nbounds > CR_METRICS_MAX_BUCKETS ? CR_METRICS_MAX_BUCKETS : nbounds;
}

void cr_metrics_hist_observe(cr_metrics_hist_t *h, double value) {
  size_t i = 0;
  if (isnan(value))
    return;
  /* Buckets are few and short latencies common: a forward scan ends early. */
  while (i < h->nbounds && value > h->bounds[i])
    i++;
  h->counts[i]++;
  h->count++;
  h->sum += value;
}

void cr_metrics_calls_init(cr_metrics_calls_t *c) {
  memset(c, 0, sizeof *c);
  cr_metrics_hist_init(&c->duration, cr_metrics_latency_bounds, cr_metrics_latency_nbounds);
}

void cr_metrics_calls_end(cr_metrics_calls_t *c, const char *method, int status, uint64_t bytes_in,
                          uint64_t bytes_out, double seconds) {
  c->calls[cr_metrics_method(method)][cr_metrics_status_class(status)]++;
  c->bytes_in += bytes_in;
  c->bytes_out += bytes_out;
  if (seconds >= 0)
    cr_metrics_hist_observe(&c->duration, seconds);
}

/* ---- rendering ---- */

void cr_metrics_escape(cr_buf_t *out, const char *value) {
  const char *p = value ? value : "", *run = p;
  for (; *p; p++) {
    const char *esc = *p == '\\' ? "\\\\" : *p == '"' ? "\\\"" : *p == '\n' ? "\\n" : NULL;
    if (esc == NULL)
      continue;
    cr_buf_append(out, run, (size_t)(p - run));
    cr_buf_append(out, esc, 2);
    run = p + 1;
  }
  cr_buf_append(out, run, (size_t)(p - run));
}

void cr_metrics_family(cr_buf_t *out, const char *name, const char *type, const char *help) {
  cr_buf_appendf(out, "# HELP %s ", name);
  for (const char *p = help; *p; p++) {
    if (*p == '\\')
      cr_buf_append(out, "\\\\", 2);
    else if (*p == '\n')
      cr_buf_append(out, "\\n", 2);
    else
      cr_buf_append(out, p, 1);
  }
  cr_buf_appendf(out, "\n# TYPE %s %s\n", name, type);
}

static void labels(cr_buf_t *out, const cr_metrics_label_t *l, size_t n, const char *le) {
  if (n == 0 && le == NULL)
    return;
  cr_buf_append(out, "{", 1);
  for (size_t i = 0; i < n; i++) {
    cr_buf_appendf(out, "%s%s=\"", i ? "," : "", l[i].name);
    cr_metrics_escape(out, l[i].value);
    cr_buf_append(out, "\"", 1);
  }
  if (le)
    cr_buf_appendf(out, "%sle=\"%s\"", n ? "," : "", le);
  cr_buf_append(out, "}", 1);
}

/* A float as the format reads it: Go's ParseFloat accepts %.17g, and +Inf/-Inf/NaN by name. */
static void fmt_double(char *s, size_t len, double v) {
  if (isnan(v))
    snprintf(s, len, "NaN");
  else if (isinf(v))
    snprintf(s, len, "%sInf", v > 0 ? "+" : "-");
  else
    snprintf(s, len, "%.17g", v);
}

void cr_metrics_u64(cr_buf_t *out, const char *name, const cr_metrics_label_t *l, size_t n, uint64_t value) {
  cr_buf_appendf(out, "%s", name);
  labels(out, l, n, NULL);
  cr_buf_appendf(out, " %llu\n", (unsigned long long)value);
}

void cr_metrics_double(cr_buf_t *out, const char *name, const cr_metrics_label_t *l, size_t n, double value) {
  char v[40];
  fmt_double(v, sizeof v, value);
  cr_buf_appendf(out, "%s", name);
  labels(out, l, n, NULL);
  cr_buf_appendf(out, " %s\n", v);
}

void cr_metrics_hist(cr_buf_t *out, const char *name, const cr_metrics_label_t *l, size_t n,
                     const cr_metrics_hist_t *h) {
  uint64_t cum = 0;
  char le[40];
  for (size_t i = 0; i <= h->nbounds; i++) {
    cum += h->counts[i];
    if (i < h->nbounds)
      snprintf(le, sizeof le, "%g", h->bounds[i]);
    else
      snprintf(le, sizeof le, "+Inf");
    cr_buf_appendf(out, "%s_bucket", name);
    labels(out, l, n, le);
    cr_buf_appendf(out, " %llu\n", (unsigned long long)cum);
  }
  fmt_double(le, sizeof le, h->sum);
  cr_buf_appendf(out, "%s_sum", name);
  labels(out, l, n, NULL);
  cr_buf_appendf(out, " %s\n%s_count", le, name);
  labels(out, l, n, NULL);
  cr_buf_appendf(out, " %llu\n", (unsigned long long)h->count);
}

#define BLOCK(i) (blocks[i])

void cr_metrics_calls_render(cr_buf_t *out, const char *prefix, const char *label_key, const char *const *names,
                             const cr_metrics_calls_t *const *blocks, size_t n, const char *duration_suffix,
                             const char *duration_help) {
  char name[128];
  cr_metrics_label_t l[3];

  snprintf(name, sizeof name, "%s_calls_total", prefix);
  cr_metrics_family(out, name, "counter", "Calls that ended, by method and response status class.");
  for (size_t i = 0; i < n; i++)
    for (unsigned m = 0; m < CR_METRICS_NMETHODS; m++)
      for (unsigned c = 0; c < CR_METRICS_NCLASSES; c++) {
        /* Only pairs that happened: 40 zero series per route would swamp the scrape. */
        if (BLOCK(i)->calls[m][c] == 0)
          continue;
        l[0] = (cr_metrics_label_t){label_key, names[i]};
        l[1] = (cr_metrics_label_t){"method", method_names[m]};
        l[2] = (cr_metrics_label_t){"code", class_names[c]};
        cr_metrics_u64(out, name, l, 3, BLOCK(i)->calls[m][c]);
      }

  snprintf(name, sizeof name, "%s_request_bytes_total", prefix);
  cr_metrics_family(out, name, "counter", "Request body bytes received from callers.");
  for (size_t i = 0; i < n; i++) {
    l[0] = (cr_metrics_label_t){label_key, names[i]};
    cr_metrics_u64(out, name, l, 1, BLOCK(i)->bytes_in);
  }
  snprintf(name, sizeof name, "%s_response_bytes_total", prefix);
  cr_metrics_family(out, name, "counter", "Response body bytes sent toward callers.");
  for (size_t i = 0; i < n; i++) {
    l[0] = (cr_metrics_label_t){label_key, names[i]};
    cr_metrics_u64(out, name, l, 1, BLOCK(i)->bytes_out);
  }
  snprintf(name, sizeof name, "%s_calls_in_flight", prefix);
  cr_metrics_family(out, name, "gauge", "Calls begun and not yet ended.");
  for (size_t i = 0; i < n; i++) {
    l[0] = (cr_metrics_label_t){label_key, names[i]};
    cr_metrics_u64(out, name, l, 1, BLOCK(i)->in_flight);
  }
  snprintf(name, sizeof name, "%s_%s", prefix, duration_suffix);
  cr_metrics_family(out, name, "histogram", duration_help);
  for (size_t i = 0; i < n; i++) {
    l[0] = (cr_metrics_label_t){label_key, names[i]};
    cr_metrics_hist(out, name, l, 1, &BLOCK(i)->duration);
  }
}

void cr_metrics_build_info(cr_buf_t *out, const char *version, const char *revision) {
  cr_metrics_label_t l[2] = {{"version", version}, {"revision", revision}};
  cr_metrics_family(out, "ccrelay_build_info", "gauge", "Always 1; the labels say which build runs.");
  cr_metrics_u64(out, "ccrelay_build_info", l, 2, 1);
}
