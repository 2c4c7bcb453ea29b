/* placeholder: being written */
#include "checkpoint.h"
