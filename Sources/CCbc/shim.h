// COIN-OR CBC's C interface (Debian: coinor-libcbc-dev), the MILP solver
// behind the `ilp` placement.
#include <coin/Cbc_C_Interface.h>
