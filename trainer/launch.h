/* `pile-trainer launch` (launch.c): N local ranks with torchrun's
 * environment. Part of the command line: it prints and returns the exit
 * status for main. */
#ifndef PILE_LAUNCH_H
#define PILE_LAUNCH_H

/* argv[1] is "launch". Returns the process's exit status. */
int pile_trainer_launch(int argc, char **argv);

#endif
