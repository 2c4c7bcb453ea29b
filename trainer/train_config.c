/* placeholder: being written */
#include "train_config.h"
