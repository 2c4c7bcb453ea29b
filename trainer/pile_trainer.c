/* placeholder: being written */
#include <stdio.h>
int main(void) { fputs("pile-trainer: not built yet\n", stderr); return 1; }
