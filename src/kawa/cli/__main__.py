from kawa.cli import main

main()
