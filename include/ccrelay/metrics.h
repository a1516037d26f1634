/* SPDX-License-Identifier: Apache-2.0 */
/* Prometheus metrics: the plain counters, gauges and histograms that the owning modules keep, and
 * the renderer of the text exposition format 0.0.4 (HELP, TYPE, samples) that /metrics answers with.
 *
 * Cost on the hot path: a counter is a uint64_t field of the owner's struct, incremented on the loop
 * thread (no lock, no allocation); a histogram observation is a short scan of fixed buckets. Blocks
 * per route or service are arrays indexed like the configuration's arrays, never looked up by name.
 *
 * Label values are bounded by construction: callers pass only names from the configuration and the
 * fixed enums below (method, status class), never a value taken from a request. The renderer still
 * escapes every label value as the format requires (backslash, double quote, newline). */
#ifndef CCRELAY_METRICS_H
#define CCRELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "ccrelay/buf.h"

/* The Content-Type of the exposition. */
#define CR_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* ---- fixed label enums ---- */

/* The methods counted by name; anything else is "other" (a caller chooses the method, so the set
 * must not grow with what callers send). */
typedef enum {
  CR_METRICS_GET,
  CR_METRICS_HEAD,
  CR_METRICS_POST,
  CR_METRICS_PUT,
  CR_METRICS_DELETE,
  CR_METRICS_PATCH,
  CR_METRICS_OPTIONS,
  CR_METRICS_OTHER,
  CR_METRICS_NMETHODS
} cr_metrics_method_t;

/* Status classes 1xx..5xx (index 0..4); a status outside 100..599 counts as 5xx. */
#define CR_METRICS_NCLASSES 5

cr_metrics_method_t cr_metrics_method(const char *method); /* NULL -> OTHER */
const char *cr_metrics_method_name(cr_metrics_method_t m);
unsigned cr_metrics_status_class(int status);              /* 0..4 */
const char *cr_metrics_class_name(unsigned cls);           /* "1xx".."5xx" */

/* ---- histograms ---- */

#define CR_METRICS_MAX_BUCKETS 16

/* A histogram of values in seconds with fixed upper bounds (ascending; +Inf is implicit). counts[i]
 * holds the observations in bucket i alone (the renderer makes them cumulative); counts[nbounds]
 * those above the last bound. */
typedef struct cr_metrics_hist {
  const double *bounds; /* not owned; static arrays */
  size_t nbounds;       /* <= CR_METRICS_MAX_BUCKETS */
  uint64_t counts[CR_METRICS_MAX_BUCKETS + 1];
  uint64_t count;
  double sum;
} cr_metrics_hist_t;

/* Request-latency bounds in seconds: 1 ms .. 60 s. */
extern const double cr_metrics_latency_bounds[];
extern const size_t cr_metrics_latency_nbounds;
/* Round-trip bounds in seconds (tunnel PINGs): 0.5 ms .. 5 s. */
extern const double cr_metrics_rtt_bounds[];
extern const size_t cr_metrics_rtt_nbounds;

/* Zeroes h and sets its bounds (nbounds is clamped to CR_METRICS_MAX_BUCKETS). */
void cr_metrics_hist_init(cr_metrics_hist_t *h, const double *bounds, size_t nbounds);
void cr_metrics_hist_observe(cr_metrics_hist_t *h, double value);

/* ---- calls: what both roles count per route (agent) or service (gateway) ---- */

typedef struct cr_metrics_calls {
  uint64_t calls[CR_METRICS_NMETHODS][CR_METRICS_NCLASSES];
  uint64_t bytes_in;   /* request body bytes received from the caller */
  uint64_t bytes_out;  /* response body bytes sent toward the caller */
  uint64_t in_flight;  /* gauge: begun and not yet ended */
  cr_metrics_hist_t duration;
} cr_metrics_calls_t;

void cr_metrics_calls_init(cr_metrics_calls_t *c);
/* A call ended: counts it, its bytes and its duration (seconds; < 0 observes nothing). */
void cr_metrics_calls_end(cr_metrics_calls_t *c, const char *method, int status, uint64_t bytes_in,
                          uint64_t bytes_out, double seconds);

/* ---- rendering ---- */

typedef struct cr_metrics_label {
  const char *name;  /* a valid label name: [a-zA-Z_][a-zA-Z0-9_]* (the caller's constant) */
  const char *value; /* any bytes; escaped here. NULL renders as "" */
} cr_metrics_label_t;

/* Appends value with the exposition format's label-value escapes (\\, \", \n). */
void cr_metrics_escape(cr_buf_t *out, const char *value);
/* The "# HELP" and "# TYPE" lines of a family; type is "counter", "gauge" or "histogram". help is
 * escaped (\\ and \n). Every sample of the family must follow before the next family starts. */
void cr_metrics_family(cr_buf_t *out, const char *name, const char *type, const char *help);
/* One sample line: name{labels} value. */
void cr_metrics_u64(cr_buf_t *out, const char *name, const cr_metrics_label_t *labels, size_t nlabels,
                    uint64_t value);
void cr_metrics_double(cr_buf_t *out, const char *name, const cr_metrics_label_t *labels, size_t nlabels,
                       double value);
/* A histogram's samples: name_bucket{labels,le=...} cumulative, name_sum, name_count. At most 7 labels. */
void cr_metrics_hist(cr_buf_t *out, const char *name, const cr_metrics_label_t *labels, size_t nlabels,
                     const cr_metrics_hist_t *h);

/* The families of n call blocks, blocks[i] named names[i] under label_key ("route" or "service"),
 * with the given name prefix ("ccrelay_agent" -> ccrelay_agent_calls_total, ..._request_bytes_total,
 * ..._response_bytes_total, ..._calls_in_flight, and prefix_<duration_suffix> for the histogram,
 * described by duration_help). The blocks may sit anywhere in the owner's structs. */
void cr_metrics_calls_render(cr_buf_t *out, const char *prefix, const char *label_key, const char *const *names,
                             const cr_metrics_calls_t *const *blocks, size_t n, const char *duration_suffix,
                             const char *duration_help);

/* ccrelay_build_info{version,revision} 1 */
void cr_metrics_build_info(cr_buf_t *out, const char *version, const char *revision);

#endif
