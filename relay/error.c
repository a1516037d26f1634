/* SPDX-License-Identifier: Apache-2.0 */
#include "ccrelay/error.h"

#include <string.h>
#include <uv.h>

#include "ccrelay/common.h"

static const struct {
  const char *name;
  const char *text;
} own_errors[] = {
#define XX(name, text) {"E" #name, text},
    CR_ERRNO_MAP(XX)
#undef XX
};

static int is_own(int err) { return err > CR__EDUMMY && err < CR__EMAX; }

const char *cr_strerror(int err) {
  if (err == 0)
    return "success";
  if (is_own(err))
    return own_errors[err - CR__EDUMMY - 1].text;
  return uv_strerror(err);
}

const char *cr_err_name(int err) {
  if (err == 0)
    return "OK";
  if (is_own(err))
    return own_errors[err - CR__EDUMMY - 1].name;
  return uv_err_name(err);
}
