/* GPT-2's encoder.json and vocab.bpe (tokenizer/data/gpt2/, with their
 * license), built into the library with the assembler's .incbin, so that
 * "gpt2" names a tokenizer in every tool wherever the binary is run or
 * copied, with nothing to install or look up (1.5 MB per binary). C11 has
 * no #embed, and a generated 1.5 MB array literal costs the compiler
 * seconds in every build and sanitizer build; .incbin costs nothing.
 * PILE_GPT2_DATA_DIR is the folder's absolute path, from meson. (The
 * build does not see the files as inputs of this object: they are GPT-2's
 * and never change.) */
#include "pile_tokenizer.h"

#include <string.h>

#define PILE_INCBIN(sym, file)                                                        \
    __asm__(".section .rodata\n"                                                      \
            ".global " #sym "\n"                                                      \
            ".type " #sym ", @object\n"                                               \
            ".balign 16\n" #sym ":\n"                                                 \
            ".incbin \"" PILE_GPT2_DATA_DIR "/" file "\"\n"                          \
            ".global " #sym "_end\n" #sym "_end:\n"                                   \
            ".byte 0\n"                                                               \
            ".previous\n")

PILE_INCBIN(pile__gpt2_encoder_json, "encoder.json");
PILE_INCBIN(pile__gpt2_vocab_bpe, "vocab.bpe");

extern const char pile__gpt2_encoder_json[], pile__gpt2_encoder_json_end[];
extern const char pile__gpt2_vocab_bpe[], pile__gpt2_vocab_bpe_end[];

int pile_tokenizer_is_builtin(const char *spec)
{
    return spec && !strcmp(spec, "gpt2");
}

int pile_tokenizer_builtin_file(const char *spec, size_t i, const char **name, const void **data, size_t *len)
{
    if (!pile_tokenizer_is_builtin(spec) || i > 1) return 0;
    if (name) *name = i == 0 ? "encoder.json" : "vocab.bpe";
    if (data) *data = i == 0 ? pile__gpt2_encoder_json : pile__gpt2_vocab_bpe;
    if (len)
        *len = i == 0 ? (size_t)(pile__gpt2_encoder_json_end - pile__gpt2_encoder_json)
                      : (size_t)(pile__gpt2_vocab_bpe_end - pile__gpt2_vocab_bpe);
    return 1;
}
