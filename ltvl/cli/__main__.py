from ltvl.cli import main

main()
