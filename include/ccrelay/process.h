/* SPDX-License-Identifier: Apache-2.0 */
/* The process around a role's event loop, the same for the gateway and the agent: how it stops
 * (SIGTERM or SIGINT begins a drain with a deadline; a second one cuts the drain short), what SIGHUP
 * does, the log flush once per loop turn, and memory given back after bursts (the heap trim, and the
 * caches the role and the lower modules keep for the next burst). The role registers handlers; the
 * process module decides when they run.
 *
 * Life: cr_process_new (handles exist, nothing watched yet) -> cr_process_start (signals watched)
 * -> cr_process_run (the loop, until no handle is left) -> cr_process_free. A role that fails
 * before it runs calls cr_process_close, runs its loop to the end, and frees.
 *
 * A stop, step by step:
 *   first TERM/INT   logs "draining", calls drain(), arms the deadline (drain_timeout_ms + 500 ms:
 *                    the tunnels' own GOAWAY deadline is drain_timeout_ms, this catches what it
 *                    did not close), then asks drained().
 *   each loop turn   while draining, asks drained(); once it says 1 the process closes its handles
 *                    and calls stop() (the role closes the rest), so the loop can end.
 *   deadline         logs "drain deadline reached" (with in_flight()), calls cut(DEADLINE).
 *   TERM/INT again   logs "second stop signal: closing now", calls cut(FORCED); the deadline is
 *                    stopped. Every further one does the same.
 * Every handler runs on the loop thread, from a libuv callback, never inside a cr_process_* call
 * other than those named here. */
#ifndef CCRELAY_PROCESS_H
#define CCRELAY_PROCESS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* The deadline waits this long after the role's drain_timeout. */
#define CR_PROCESS_DRAIN_GRACE_MS 500

typedef struct cr_process cr_process_t;

/* The exit status of a role whose stop cut calls in flight (CR_PROCESS_DEADLINE or CR_PROCESS_FORCED);
 * a clean drain exits 0. Beside cli.h's 0 (ok), 1 (runtime failure) and 2 (usage or configuration). */
#define CR_PROCESS_EXIT_CUT 3

/* How the run ended, or where it is. */
typedef enum {
  CR_PROCESS_RUNNING = 0, /* no stop signal yet */
  CR_PROCESS_DRAINING,    /* a stop signal arrived; work in flight is finishing */
  CR_PROCESS_DRAINED,     /* everything finished before the deadline */
  CR_PROCESS_DEADLINE,    /* the drain deadline passed: work still in flight was cut */
  CR_PROCESS_FORCED       /* a second stop signal came first: work still in flight was cut */
} cr_process_end_t;

typedef struct cr_process_handlers {
  /* Required. The first stop signal: stop taking new work and let work in flight finish. */
  void (*drain)(void *arg);
  /* Required. 1 when nothing is left to finish; asked only while draining (right after drain() and
   * after every loop turn), until it says 1 once. */
  int (*drained)(void *arg);
  /* Required. why is CR_PROCESS_DEADLINE or CR_PROCESS_FORCED: close what is left now; drained()
   * must then say 1 within a few loop turns. May be called more than once (each further signal). */
  void (*cut)(void *arg, cr_process_end_t why);
  /* Optional. Once drained: the role closes its remaining handles (timers, admin listener...). */
  void (*stop)(void *arg);
  /* Optional. Work still in flight (connections, exchanges), for the deadline's log line. */
  size_t (*in_flight)(void *arg);
  /* Optional (NULL: always busy). The heap trim's question, once per check: is work in flight, or
   * has there been any since the previous call? (see memtrim.h) */
  int (*busy)(void *arg);
} cr_process_handlers_t;

/* Creates the process's handles on loop (signals, the drain deadline, the heap trim, which starts
 * checking every trim_interval_ms at once; 0 means 1000) and ignores SIGPIPE for the whole process
 * (a peer that went away shows up as EPIPE on the write instead). h is copied; arg is passed to
 * every handler. drain_timeout_ms: the role's drain_timeout, logged and used for the deadline. */
cr_process_t *cr_process_new(uv_loop_t *loop, const cr_process_handlers_t *h, void *arg, uint64_t drain_timeout_ms,
                             uint64_t trim_interval_ms);

/* SIGHUP calls reload(arg), on the loop thread. Without a handler SIGHUP is watched and ignored (its
 * default action would end the process). Replaces an earlier handler. */
void cr_process_on_reload(cr_process_t *p, void (*reload)(void *arg), void *arg);
/* A reloaded configuration's drain_timeout: the deadline of a drain that begins afterwards. */
void cr_process_set_drain_timeout(cr_process_t *p, uint64_t drain_timeout_ms);

/* Adds release(arg) to the cache-release hooks: each trim check that finds the role idle runs the
 * hooks in the order they were added, then gives back the process-wide caches of the lower modules
 * (HTTP message fields, TLS buffers, stream read buffers). A hook frees what its owner keeps for
 * the next burst (free lists, per-connection buffers); it must not close or start anything. */
void cr_process_on_release(cr_process_t *p, void (*release)(void *arg), void *arg);

/* Starts watching SIGTERM, SIGINT and SIGHUP. 0 or a libuv error. */
int cr_process_start(cr_process_t *p);

/* Runs the loop until no handle is left, flushing the log before each turn may block. Returns how
 * the run ended: CR_PROCESS_RUNNING only if the loop ran out of handles without a stop signal. */
cr_process_end_t cr_process_run(cr_process_t *p);

/* How the run ended (or where it is now). */
cr_process_end_t cr_process_end(const cr_process_t *p);

/* Closes the process's handles without a drain (a role that failed to start). Idempotent; stop() is
 * not called. */
void cr_process_close(cr_process_t *p);

/* Frees p. Its handles must be closed (a finished drain, or cr_process_close) and the loop must
 * have run since, so their close callbacks are done; NULL is ignored. */
void cr_process_free(cr_process_t *p);

/* A call in flight was cut while draining, by something other than the process's own deadline (the
 * tunnels' GOAWAY deadline, which equals drain_timeout): the run then ends as CR_PROCESS_DEADLINE, not
 * DRAINED. No effect unless draining. */
void cr_process_note_cut(cr_process_t *p);

#endif
