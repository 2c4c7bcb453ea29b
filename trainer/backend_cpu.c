/* placeholder: being written */
#include "backend.h"
