/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/errpage.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "ccrelay/x509.h"

void cr_errpage_json_escape(cr_buf_t *out, const char *s) {
  for (; s && *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      cr_buf_appendf(out, "\\%c", c);
    else if (c < 0x20)
      cr_buf_appendf(out, "\\u%04x", c);
    else
      cr_buf_append(out, s, 1);
  }
}

static void xml_escape(cr_buf_t *out, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
    case '<': cr_buf_append(out, "&lt;", 4); break;
    case '>': cr_buf_append(out, "&gt;", 4); break;
    case '&': cr_buf_append(out, "&amp;", 5); break;
    case '"': cr_buf_append(out, "&quot;", 6); break;
    default:
      if ((unsigned char)*s >= 0x20 || *s == '\n' || *s == '\t')
        cr_buf_append(out, s, 1);
    }
  }
}

/* The <detail> entries both SOAP versions carry: what ccrelay's JSON answer says. */
static void soap_detail(cr_buf_t *body, int status, const char *code, const char *request_id) {
  cr_buf_appendf(body, "<ccrelay-error>");
  xml_escape(body, code);
  cr_buf_appendf(body, "</ccrelay-error><http-status>%d</http-status>", status);
  if (request_id) {
    cr_buf_appendf(body, "<request-id>");
    xml_escape(body, request_id);
    cr_buf_appendf(body, "</request-id>");
  }
}

void cr_errpage_build(int status, const char *code, const char *message, const char *request_id, int soap,
                      cr_http_msg_t *head, cr_buf_t *body) {
  char len[24];
  const char *ctype;
  int http_status = status;
  cr_buf_reset(body);
  if (soap == CR_SOAP_12) {
    ctype = "application/soap+xml; charset=utf-8";
    cr_buf_appendf(body,
                   "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
                   "<env:Envelope xmlns:env=\"http://www.w3.org/2003/05/soap-envelope\">"
                   "<env:Body><env:Fault><env:Code><env:Value>env:%s</env:Value></env:Code>"
                   "<env:Reason><env:Text xml:lang=\"en\">",
                   status >= 500 ? "Receiver" : "Sender");
    xml_escape(body, message);
    cr_buf_appendf(body, "</env:Text></env:Reason><env:Detail><c:error xmlns:c=\"urn:ccrelay\">");
    soap_detail(body, status, code, request_id);
    cr_buf_appendf(body, "</c:error></env:Detail></env:Fault></env:Body></env:Envelope>\n");
    http_status = 500;
  } else if (soap) {
    ctype = "text/xml; charset=utf-8";
    cr_buf_appendf(body,
                   "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
                   "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\">"
                   "<soap:Body><soap:Fault><faultcode>soap:%s</faultcode><faultstring>",
                   status >= 500 ? "Server" : "Client");
    xml_escape(body, message);
    cr_buf_appendf(body, "</faultstring><faultactor>ccrelay</faultactor><detail>");
    soap_detail(body, status, code, request_id);
    cr_buf_appendf(body, "</detail></soap:Fault></soap:Body></soap:Envelope>\n");
    http_status = 500;
  } else {
    ctype = "application/json";
    cr_buf_appendf(body, "{\"error\":\"");
    cr_errpage_json_escape(body, code);
    cr_buf_appendf(body, "\",\"status\":%d,\"message\":\"", status);
    cr_errpage_json_escape(body, message);
    cr_buf_appendf(body, "\"");
    if (request_id) {
      cr_buf_appendf(body, ",\"request_id\":\"");
      cr_errpage_json_escape(body, request_id);
      cr_buf_appendf(body, "\"");
    }
    cr_buf_appendf(body, "}\n");
  }
  cr_http_msg_reset(head);
  head->status = http_status;
  head->version_minor = 1;
  head->content_length = (int64_t)body->len;
  cr_http_msg_add_header(head, "Content-Type", 12, ctype, strlen(ctype));
  snprintf(len, sizeof len, "%zu", body->len);
  cr_http_msg_add_header(head, "Content-Length", 14, len, strlen(len));
  cr_http_msg_add_header(head, "Cache-Control", 13, "no-store", 8);
  if (code && cr_http_field_value_valid(code, strlen(code)))
    cr_http_msg_add_header(head, "X-Ccrelay-Error", 15, code, strlen(code));
}

void cr_errpage_request_id_new(char out[17]) {
  static uint32_t prefix;
  static uint32_t counter;
  static int seeded;
  if (!seeded) {
    if (cr_x509_random_bytes(&prefix, sizeof prefix) < 0)
      prefix = (uint32_t)(uintptr_t)&prefix ^ 0x5bd1e995u;
    cr_x509_random_bytes(&counter, sizeof counter); /* zero when it fails */
    seeded = 1;
  }
  static const char hex[] = "0123456789abcdef";
  uint64_t v = (uint64_t)prefix << 32 | ++counter;
  for (int i = 15; i >= 0; i--, v >>= 4)
    out[i] = hex[v & 15];
  out[16] = '\0';
}

/* The request id's alphabet as a table: the agent checks the id of every request it receives. */
static const unsigned char id_char[256] = {
    ['.'] = 1, ['_'] = 1, [':'] = 1, ['-'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1,
    ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1,
    ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1,
    ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1,
    ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
};

int cr_errpage_request_id_valid(const char *id) {
  size_t n = 0;
  if (id == NULL)
    return 0;
  for (; id[n]; n++)
    if (!id_char[(unsigned char)id[n]] || n == 64)
      return 0;
  return n >= 1;
}
