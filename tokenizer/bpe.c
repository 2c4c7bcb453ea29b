/* PLACEHOLDER until the BPE backend lands (issue 3). */
#include "tokenizer_internal.h"

int pile__bpe_open(pile_tokenizer **out, const char *spec, pile_err *err)
{
    *out = NULL;
    return pile_err_set(err, PILE_EINVAL, "cannot open tokenizer '%s': the BPE backend is not built yet", spec);
}
