/* The integer model over the memory regions: one token at a time (mmfree.golden.GoldenModel). */
#ifndef MMFREE_MODEL_H
#define MMFREE_MODEL_H

#include <stdint.h>

/* Read the model that the regions describe (mmfree.memory_map): -1 when they hold none that this
 * build runs (descriptor, sizes, trit bytes), 0 when they hold one of the same shape as before (the
 * recurrent state is kept), 1 for a new shape (the state is zeroed). Call it again after any WRITE. */
int model_load(void);

/* Whether the last model_load() found a model. */
int model_loaded(void);

/* The vocabulary of the loaded model. */
uint32_t model_vocab(void);

/* Zero the recurrent state of every layer. */
void model_reset(void);

/* Feed one token (below model_vocab()); its logits are then in model_logits(). */
void model_step(uint32_t token);

/* The logits of the last step: ACT codes, model_vocab() of them. */
const int32_t *model_logits(void);

#endif
