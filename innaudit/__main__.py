from innaudit.cli import main

main()
