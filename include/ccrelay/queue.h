/* SPDX-License-Identifier: Apache-2.0 */
/* Intrusive circular doubly-linked list. Embed a cr_queue_t in the element; an empty list is a
 * head pointing at itself. No allocation, O(1) insert and remove. */
#ifndef CCRELAY_QUEUE_H
#define CCRELAY_QUEUE_H

#include "ccrelay/common.h"

typedef struct cr_queue {
  struct cr_queue *next;
  struct cr_queue *prev;
} cr_queue_t;

#define cr_queue_data(q, type, member) cr_container_of(q, type, member)
#define cr_queue_foreach(q, head) for ((q) = (head)->next; (q) != (head); (q) = (q)->next)
/* Safe against removal of q inside the loop body. */
#define cr_queue_foreach_safe(q, n, head) \
  for ((q) = (head)->next, (n) = (q)->next; (q) != (head); (q) = (n), (n) = (q)->next)

static inline void cr_queue_init(cr_queue_t *q) { q->next = q->prev = q; }
static inline int cr_queue_empty(const cr_queue_t *q) { return q->next == q; }
static inline void cr_queue_insert_tail(cr_queue_t *head, cr_queue_t *q) {
  q->next = head;
  q->prev = head->prev;
  q->prev->next = q;
  head->prev = q;
}
static inline void cr_queue_insert_head(cr_queue_t *head, cr_queue_t *q) {
  q->next = head->next;
  q->prev = head;
  q->next->prev = q;
  head->next = q;
}
/* Removes q from whatever list holds it and leaves it as an empty list, so removing twice is harmless. */
static inline void cr_queue_remove(cr_queue_t *q) {
  q->prev->next = q->next;
  q->next->prev = q->prev;
  cr_queue_init(q);
}
static inline cr_queue_t *cr_queue_head(const cr_queue_t *head) { return head->next; }

#endif
