#include "ccrelay/cli.h"

int main(int argc, char **argv) { return cr_cli_main(argc, argv); }
