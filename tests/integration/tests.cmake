# Integration tests: real redis-server, real jollyjet processes, real sockets.
find_package(Python3 COMPONENTS Interpreter REQUIRED)
file(GLOB JJ_INTEGRATION_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/test_*.py)
foreach(py ${JJ_INTEGRATION_TESTS})
  get_filename_component(name ${py} NAME_WE)
  add_test(NAME integration.${name} COMMAND ${Python3_EXECUTABLE} ${py})
  set_tests_properties(integration.${name} PROPERTIES
    LABELS integration TIMEOUT 300 RUN_SERIAL TRUE SKIP_RETURN_CODE 77
    ENVIRONMENT "JJ_BIN=$<TARGET_FILE:jollyjet>;JJ_SOURCE_DIR=${CMAKE_SOURCE_DIR};PYTHONDONTWRITEBYTECODE=1")
endforeach()
# headless chromium (engine/scripts/deps.sh test installs it): exit 77 = skipped, only when there is none
if(TARGET jollyjet AND EXISTS ${CMAKE_CURRENT_LIST_DIR}/test_dashboard.py)
  set_tests_properties(integration.test_dashboard PROPERTIES SKIP_RETURN_CODE 77)
endif()

# busted specs, run inside the engine against the shared test Redis.
add_test(NAME spec COMMAND ${CMAKE_SOURCE_DIR}/tests/tools/spec.sh $<TARGET_FILE:jollyjet>)
set_tests_properties(spec PROPERTIES LABELS spec TIMEOUT 300
  ENVIRONMENT "JJ_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
