// Moved to core/sha256.h (kept while other work in flight still includes this path).
#pragma once
#include "core/sha256.h"
