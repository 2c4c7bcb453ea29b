/* placeholder: being written */
#include "optim.h"
