// doctest's main; every tests/test_<topic>.cpp links into the one taskmoe_tests executable.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
