from telecli.cli import main

main()
