/* SPDX-License-Identifier: Apache-2.0 */
/* Connections counted by source address, for per-source caps on a listener: a fixed-size table sized
 * at creation, so an accept costs one hash and no allocation, and a flood of distinct addresses
 * cannot grow it.
 *
 * An IPv4 address is its own source (an IPv4-mapped IPv6 address counts as that IPv4 address). An
 * IPv6 source is its /64: one host usually holds a whole /64 and can pick any address in it, so
 * counting per /128 would be no cap at all.
 *
 * Single-threaded, like the loop that uses it. */
#ifndef CCRELAY_SRCMAP_H
#define CCRELAY_SRCMAP_H

#include <stddef.h>
#include <sys/socket.h>

/* One source: what a connection keeps to release its count later. */
typedef struct cr_srckey {
  unsigned char b[16]; /* IPv4: ::ffff:a.b.c.d; IPv6: the /64 prefix, rest zero */
} cr_srckey_t;

typedef struct cr_srcmap cr_srcmap_t;

/* A table for at most max_entries counted connections at once (so at most that many sources), each
 * source capped at per_source connections (>= 1). */
cr_srcmap_t *cr_srcmap_new(size_t max_entries, unsigned per_source);
void cr_srcmap_free(cr_srcmap_t *m);

/* The source of addr (AF_INET or AF_INET6). 0, or UV_EAFNOSUPPORT for another family. */
int cr_srcmap_key(const struct sockaddr *addr, cr_srckey_t *key);

/* Counts one more connection from key. 0; CR_ELIMIT when key already has per_source connections or
 * the table holds max_entries connections (nothing counted then). */
int cr_srcmap_acquire(cr_srcmap_t *m, const cr_srckey_t *key);
/* Gives back one connection counted by acquire. */
void cr_srcmap_release(cr_srcmap_t *m, const cr_srckey_t *key);
/* Connections counted for key now (0 for an unknown one), and in the whole table. */
unsigned cr_srcmap_count(const cr_srcmap_t *m, const cr_srckey_t *key);
size_t cr_srcmap_total(const cr_srcmap_t *m);
/* Distinct sources with at least one connection. */
size_t cr_srcmap_sources(const cr_srcmap_t *m);

#endif
