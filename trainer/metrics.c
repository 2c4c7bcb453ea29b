/* placeholder: being written */
#include "metrics.h"
