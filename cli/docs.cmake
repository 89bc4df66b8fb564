# Writes the bash and zsh completion scripts and the man page by running the
# msb just built: its own command definitions are the source (cli/docs.h).
#   cmake -DMSB=... -DBASH=... -DZSH=... -DMAN=... -P docs.cmake
cmake_minimum_required(VERSION 3.25)
foreach(pair "BASH;__complete;bash" "ZSH;__complete;zsh" "MAN;__man")
  list(GET pair 0 var)
  list(SUBLIST pair 1 -1 args)
  get_filename_component(dir "${${var}}" DIRECTORY)
  file(MAKE_DIRECTORY "${dir}")
  execute_process(COMMAND "${MSB}" ${args} OUTPUT_FILE "${${var}}.tmp" RESULT_VARIABLE rc
    ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${MSB} ${args} failed (${rc}): ${err}")
  endif()
  file(RENAME "${${var}}.tmp" "${${var}}")
endforeach()
