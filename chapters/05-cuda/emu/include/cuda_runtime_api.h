/* cuda_runtime_api.h — the CUDA emulator's stand-in (see ../cr_emu.h); nothing from a CUDA toolkit. */
#include "../cr_emu.h"
