/* placeholder: being written */
#include "train_loop.h"
