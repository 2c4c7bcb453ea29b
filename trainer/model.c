/* placeholder: being written */
#include "model.h"
