/* placeholder: being written */
#include "train_data.h"
