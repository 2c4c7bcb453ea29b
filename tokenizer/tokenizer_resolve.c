/* Finding the tokenizer a data folder recorded: a spec written into a file
 * (pile-prep's manifest.json) names a path relative to that file's folder,
 * so the folder can be copied to another machine and still decode. Older
 * manifests recorded the spec as it was typed, relative to wherever
 * pile-prep ran; that spelling is tried second. A candidate counts only if
 * its fingerprint is the one recorded, so a look-alike file is never taken. */
#include "pile_tokenizer.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pile_fs.h"
#include "pile_hex.h"

/* Opens `path` and compares fingerprints: 1 match, 0 other fingerprint (why
 * filled), -1 cannot open (why filled). The tokenizer is kept in *keep on a match. */
static int try_spec(const char *path, const uint8_t *fp, pile_tokenizer **keep, char *why, size_t whylen)
{
    pile_tokenizer *tok = NULL;
    pile_err err;
    pile_err_clear(&err);
    if (pile_tokenizer_open(&tok, path, &err) != 0) {
        snprintf(why, whylen, "%s", err.msg);
        return -1;
    }
    uint8_t got[PILE_TOKENIZER_FP_BYTES];
    pile_tokenizer_fingerprint(tok, got);
    if (memcmp(got, fp, PILE_TOKENIZER_FP_BYTES) != 0) {
        char a[2 * PILE_TOKENIZER_FP_BYTES + 1], b[2 * PILE_TOKENIZER_FP_BYTES + 1];
        pile_hex_encode(a, got, PILE_TOKENIZER_FP_BYTES);
        pile_hex_encode(b, fp, PILE_TOKENIZER_FP_BYTES);
        snprintf(why, whylen, "'%s' has fingerprint %s, the data's is %s", path, a, b);
        pile_tokenizer_close(tok);
        return 0;
    }
    if (keep) *keep = tok;
    else pile_tokenizer_close(tok);
    return 1;
}

/* out = path, spelled absolute when it is a path that can be made so. */
static int set_spec(pile_buf *out, const char *path, pile_err *err)
{
    char *abs = strcmp(path, "bytes") && !pile_tokenizer_is_builtin(path) ? realpath(path, NULL) : NULL;
    out->len = 0;
    int rc = pile_buf_append_str(out, abs ? abs : path);
    free(abs);
    if (!rc && pile_buf_reserve(out, 1)) rc = PILE_ENOMEM;
    if (rc) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    out->data[out->len] = '\0';
    return 0;
}

int pile_tokenizer_resolve(const char *spec, const char *base, const uint8_t fp[PILE_TOKENIZER_FP_BYTES],
                           pile_buf *out, pile_tokenizer **tok, pile_err *err)
{
    if (tok) *tok = NULL;
    if (!spec || !*spec) spec = "bytes";
    char why1[PILE_ERR_MSG_MAX], why2[PILE_ERR_MSG_MAX];
    why1[0] = why2[0] = '\0';
    if (!strcmp(spec, "bytes") || pile_tokenizer_is_builtin(spec) || spec[0] == '/' || !base || !*base) {
        int r = try_spec(spec, fp, tok, why1, sizeof why1);
        if (r > 0) return set_spec(out, spec, err);
        return pile_err_set(err, r == 0 ? PILE_EMISMATCH : PILE_ENOENT, "cannot use the recorded tokenizer: %s", why1);
    }
    pile_buf in_base = {0};
    if (pile_fs_join(&in_base, base, spec)) return pile_err_set(err, PILE_ENOMEM, "out of memory");
    int r1 = try_spec(in_base.data, fp, tok, why1, sizeof why1), r2 = -1;
    int rc = 0;
    if (r1 > 0) {
        rc = set_spec(out, in_base.data, err);
    } else if ((r2 = try_spec(spec, fp, tok, why2, sizeof why2)) > 0) {
        rc = set_spec(out, spec, err);
    } else {
        /* name the one that came closest: a file with another fingerprint, else both places */
        if (r1 == 0 || r2 == 0)
            rc = pile_err_set(err, PILE_EMISMATCH, "cannot use the recorded tokenizer '%s': %s", spec, r1 == 0 ? why1 : why2);
        else
            rc = pile_err_set(err, PILE_ENOENT,
                              "cannot find the recorded tokenizer '%s': neither '%s' (beside the record) nor '%s' "
                              "(from the current folder) opens",
                              spec, in_base.data, spec);
    }
    if (rc && tok && *tok) {
        pile_tokenizer_close(*tok);
        *tok = NULL;
    }
    pile_buf_free(&in_base);
    return rc;
}
